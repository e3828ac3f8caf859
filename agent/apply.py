"""Execute a plan against Incus (and the firewall), one dependency level at a time.

- Actions of one level are independent: they run concurrently on a bounded thread pool.
- A failure is recorded with Incus's own message and only skips the actions that depend on it;
  everything else is still applied, and every failure is reported.
- Nothing here keeps state between runs: a run killed at any point (even SIGKILL) leaves Incus
  with some actions done, and the next reconcile plans from what is really there.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from anklume import log, paths
from anklume.agent import images, nftables
from anklume.agent.firewall import Firewall
from anklume.agent.incus_api import Incus, IncusError
from anklume.agent.plan import Action, Op, Plan
from anklume.agent.resources import PROTECT_KEY, Key, Resource, label
from anklume.errors import AnklumeError

_log = log.get("apply")
WORKERS = 8  # Incus serialises its database writes; more threads than this only queue there
STOP_TIMEOUT = 30  # seconds a guest gets to shut down cleanly before it is forced

# Client-side remotes have no meaning to the daemon: a `remote:alias` image must name the
# server itself. Only the public image server is known; others need a fingerprint or alias.
_REMOTES = {"images": ("https://images.linuxcontainers.org", "simplestreams")}
_FINGERPRINT = re.compile(r"^[0-9a-f]{12,64}$")


@dataclass(frozen=True)
class Outcome:
    action: Action
    error: str | None = None  # Incus's message (failed)
    skipped: str | None = None  # why it was not attempted
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None


@dataclass(frozen=True)
class Result:
    outcomes: tuple[Outcome, ...]
    seconds: float

    @property
    def done(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def skipped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.skipped is not None]


def image_source(image: str) -> dict[str, str]:
    """The `source` of an instance create request for `image` (alias, fingerprint or
    remote:alias)."""
    remote, sep, name = image.partition(":")
    if sep and remote not in ("", "local"):
        if remote not in _REMOTES:
            raise AnklumeError(f"image {image!r}: unknown image remote {remote!r}",
                               hint="use a local alias or fingerprint, or --default-image")
        server, protocol = _REMOTES[remote]
        return {"type": "image", "alias": name, "server": server, "protocol": protocol,
                "mode": "pull"}
    name = name if sep else image
    if _FINGERPRINT.match(name):
        return {"type": "image", "fingerprint": name}
    return {"type": "image", "alias": name}


def _keep_incus_keys(observed: Resource | None, config: dict[str, str]) -> dict[str, str]:
    # A full PUT replaces the config: hand back what Incus itself keeps there (volatile.* holds
    # the MAC address, idmap, last state...).
    if observed is not None:
        for k, v in observed.config.items():
            if k.startswith(("volatile.", "image.")) and k not in config:
                config[k] = v
    return config


def _host_dirs(r: Resource) -> None:
    # Persistent data and shared volumes are host directories we own; Incus refuses to start
    # an instance whose disk source does not exist. So is the host end of unix-socket grants
    # (tmpfiles.d makes it at boot; a development host has none).
    for name, dev in r.devices.items():
        if dev.get("type") == "disk" and name.startswith(("pd-", "sv-")) and dev.get("source"):
            os.makedirs(dev["source"], mode=0o755, exist_ok=True)
        elif dev.get("type") == "proxy" and dev.get("bind") == "host" and dev.get(
                "listen", "").startswith(f"unix:{paths.SERVICE_SOCKETS}/"):
            os.makedirs(paths.SERVICE_SOCKETS, mode=0o700, exist_ok=True)


def _desired(a: Action) -> Resource:
    # What a create, update or start writes: the planner always sets it.
    assert a.desired is not None, a.label
    return a.desired


def _observed(a: Action) -> Resource:
    # What an update or a deletion finds in place: the planner sets it where it is read.
    assert a.observed is not None, a.label
    return a.observed


def _devices(r: Resource) -> dict[str, dict[str, str]]:
    return {k: dict(v) for k, v in r.devices.items()}


def _state(incus: Incus, r: Resource, action: str, **extra: Any) -> None:
    incus.request("PUT", f"/1.0/instances/{r.name}/state", project=r.project,
                  body={"action": action, **extra})


def _stop_or_restart(incus: Incus, r: Resource, action: str) -> None:
    try:
        _state(incus, r, action, timeout=STOP_TIMEOUT)
    except IncusError:
        # A guest that ignores the shutdown request is stopped the hard way.
        _state(incus, r, action, force=True)


class Executor:
    def __init__(self, incus: Incus,
                 nft_write: Callable[[Firewall], None] = nftables.write) -> None:
        self.incus = incus
        self.nft_write = nft_write
        # Incus 6.0 deleting two bridges at once can mix them up ("Failed to delete bridge
        # children interfaces: ... Device net-x does not exist" for the other one): one at a time.
        self._bridge_delete = threading.Lock()

    def run(self, a: Action) -> None:
        getattr(self, f"_{a.op.value}_{a.kind.value}")(a)

    # Projects and networks.
    def _create_project(self, a: Action) -> None:
        r = _desired(a)
        self.incus.request("POST", "/1.0/projects", body={
            "name": r.name, "description": r.description, "config": dict(r.config)})

    def _update_project(self, a: Action) -> None:
        # Only our keys are compared; the features Incus filled in stay as they are.
        r = _desired(a)
        config = {**_observed(a).config, **r.config}
        self.incus.request("PUT", f"/1.0/projects/{a.name}", body={
            "description": r.description, "config": config})

    def _create_network(self, a: Action) -> None:
        r = _desired(a)
        self.incus.request("POST", "/1.0/networks", body={
            "name": r.name, "type": "bridge", "description": r.description,
            "config": dict(r.config)})

    def _update_network(self, a: Action) -> None:
        r = _desired(a)
        self.incus.request("PUT", f"/1.0/networks/{a.name}", body={
            "description": r.description, "config": _keep_incus_keys(a.observed, dict(r.config))})

    # Profiles.
    def _create_profile(self, a: Action) -> None:
        r = _desired(a)
        if r.name == "default":
            # Incus made it together with the project: fill it in.
            self._update_profile(a)
            return
        self.incus.request("POST", "/1.0/profiles", project=r.project, body={
            "name": r.name, "description": r.description, "config": dict(r.config),
            "devices": _devices(r)})

    def _update_profile(self, a: Action) -> None:
        r = _desired(a)
        self.incus.request("PUT", f"/1.0/profiles/{r.name}", project=r.project, body={
            "description": r.description, "config": dict(r.config), "devices": _devices(r)})

    # Instances.
    def _create_instance(self, a: Action) -> None:
        r = _desired(a)
        _host_dirs(r)
        self.incus.request("POST", "/1.0/instances", project=r.project, body={
            "name": r.name, "type": r.instance_type, "description": r.description,
            "config": dict(r.config), "devices": _devices(r), "profiles": list(r.profiles),
            "source": image_source(r.image)})

    def _update_instance(self, a: Action) -> None:
        r, have = _desired(a), _observed(a)
        _host_dirs(r)
        self.incus.request("PUT", f"/1.0/instances/{r.name}", project=r.project, body={
            "architecture": have.architecture, "description": r.description,
            "config": _keep_incus_keys(have, dict(r.config)), "devices": _devices(r),
            "profiles": list(r.profiles), "ephemeral": False, "stateful": False})
        if a.needs_restart:
            _stop_or_restart(self.incus, r, "restart")

    def _start_instance(self, a: Action) -> None:
        try:
            _state(self.incus, _desired(a), "start")
        except IncusError as e:
            # Already running (started by someone else, or by an earlier interrupted run).
            if "already running" not in str(e).lower():
                raise

    def _delete_instance(self, a: Action) -> None:
        r = _observed(a)
        if r.protected:  # the planner only deletes these with --force
            self.incus.request("PATCH", f"/1.0/instances/{r.name}", project=r.project,
                               body={"config": {PROTECT_KEY: "false"}})
        if r.status == "Running":
            _state(self.incus, r, "stop", force=True)
        self.incus.request("DELETE", f"/1.0/instances/{r.name}", project=r.project)

    def _delete_profile(self, a: Action) -> None:
        self.incus.request("DELETE", f"/1.0/profiles/{a.name}", project=a.project)

    def _delete_project(self, a: Action) -> None:
        self.incus.request("DELETE", f"/1.0/projects/{a.name}")

    def _delete_network(self, a: Action) -> None:
        with self._bridge_delete:
            self.incus.request("DELETE", f"/1.0/networks/{a.name}")

    # Shipped images (agent/images.py).
    def _create_image(self, a: Action) -> None:
        images.import_image(self.incus, _desired(a))

    def _update_image(self, a: Action) -> None:
        images.set_alias(self.incus, _desired(a))

    # The firewall: the whole table is written, in one transaction.
    def _update_firewall(self, a: Action) -> None:
        assert a.firewall is not None
        self.nft_write(a.firewall)


def apply(plan: Plan, incus: Incus | None = None, *, workers: int = WORKERS,
          nft_write: Callable[[Firewall], None] = nftables.write) -> Result:
    """Run every action of `plan`; never raises for one resource's failure."""
    ex = Executor(incus or Incus(), nft_write)
    t0 = time.monotonic()
    outcomes: list[Outcome] = []
    bad: dict[Key, str] = {}  # key of a failed/skipped action -> why

    def one(a: Action) -> Outcome:
        t = time.monotonic()
        try:
            ex.run(a)
        except (AnklumeError, OSError) as e:
            msg = str(e)
            log.event(_log, "Action failed", logging.ERROR, action=a.op.value,
                      resource=a.label, error=msg)
            return Outcome(a, error=msg, seconds=time.monotonic() - t)
        dt = time.monotonic() - t
        log.event(_log, "Action done", logging.DEBUG, action=a.op.value, resource=a.label,
                  duration_ms=int(dt * 1000))
        return Outcome(a, seconds=dt)

    # A new instance starts in the same worker right after its creation, instead of waiting
    # for every other creation to finish: Incus works on starts and creations in parallel.
    # Its other dependencies (the firewall) are on earlier levels, already settled by then.
    # Not when boot priorities differ: then starts wait for their level, higher ones first.
    starts = [a for a in plan if a.op is Op.START]
    same_priority = len({a.level for a in starts}) <= 1
    follow = {a.key: a for a in starts if a.observed is None} if same_priority else {}
    followed: set[int] = set()

    def chain(a: Action) -> list[Outcome]:
        first = one(a)
        nxt = follow.get(a.key) if a.op is Op.CREATE else None
        if nxt is None:
            return [first]
        followed.add(id(nxt))
        if not first.ok:
            return [first, Outcome(nxt, skipped=f"{a.label} failed")]
        late = next((d for d in nxt.depends_on if d in bad), None)
        if late is not None:
            return [first, Outcome(nxt, skipped=f"{label(late)} {bad[late]}")]
        return [first, one(nxt)]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for level in plan.levels():
            todo: list[Action] = []
            for a in level:
                if id(a) in followed:
                    continue
                dep = next((d for d in a.depends_on if d in bad), None)
                if dep is not None:
                    outcomes.append(Outcome(a, skipped=f"{label(dep)} {bad[dep]}"))
                    bad[a.key] = "skipped"
                else:
                    todo.append(a)
            for group in pool.map(chain, todo):
                for o in group:
                    outcomes.append(o)
                    if not o.ok:
                        bad[o.action.key] = "failed" if o.error is not None else "skipped"
    return Result(tuple(outcomes), time.monotonic() - t0)
