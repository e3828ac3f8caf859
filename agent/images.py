"""Container images shipped inside the OS: what lets the default infra deploy with no network.

The build packs a small Debian trixie image into `/usr/share/anklume/images/<name>/` with an
`image.json` naming the infra.yml images it stands in for (`images:debian/13`, ...) and its
Incus fingerprint (image/container.py). Planning (`with_shipped`, pure) makes the machines
whose image it serves use its fingerprint, and adds the image itself to the desired state: the
plan then shows `+ image ...` when Incus lacks it, and the executor imports it (`import_image`)
before the instances that need it, which are skipped if the import fails.

A served name always resolves to the shipped image, network or not: it lies on the
verity-checked /usr, so it is as trusted as the OS itself and the same on every boot, whereas a
pull from an image server depends on the network and on that server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from anklume import log, paths
from anklume.agent.incus_api import Incus, IncusError
from anklume.agent.model import frozen_map
from anklume.agent.resources import Key, Kind, Resource, State
from anklume.errors import AnklumeError
from anklume.run import run

_log = log.get("images")
IMPORT_TIMEOUT = 600  # seconds: unpacking and hashing ~40 MB under emulation


@dataclass(frozen=True)
class Shipped:
    name: str
    tarball: Path
    fingerprint: str
    alias: str
    serves: tuple[str, ...]


def catalog(root: Path | None = None) -> list[Shipped]:
    """The shipped images; an unreadable description is logged and left out, never fatal
    (the machines it would serve then fail on their own with Incus's message)."""
    root = root or paths.image_catalog()
    out: list[Shipped] = []
    if not root.is_dir():
        return out
    for desc in sorted(root.glob("*/image.json")):
        try:
            d = json.loads(desc.read_text())
            tarball = desc.parent / d["file"]
            out.append(Shipped(name=d["name"], tarball=tarball, fingerprint=d["fingerprint"],
                               alias=d["alias"], serves=tuple(d["serves"])))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.event(_log, "Shipped image description unreadable", logging.ERROR,
                      file=str(desc), error=str(e))
    return out


def wanted(state: State) -> set[str]:
    """The image names the desired instances are created from."""
    return {r.image for r in state.of_kind(Kind.INSTANCE) if r.image}


def resolve(names: Iterable[str], shipped: Iterable[Shipped]) -> dict[str, Shipped]:
    """Which shipped image serves each name (pure); names nobody serves are left out."""
    by_name: dict[str, Shipped] = {}
    for s in shipped:
        for n in s.serves:
            by_name.setdefault(n, s)
    return {n: by_name[n] for n in names if n in by_name}


def with_shipped(state: State, shipped: Iterable[Shipped]) -> State:
    """The desired state with each served image name replaced by the shipped image's
    fingerprint, and one IMAGE resource per shipped image some instance needs (pure)."""
    need = resolve(wanted(state), shipped)
    if not need:
        return state
    res: dict[Key, Resource] = {
        k: replace(r, image=need[r.image].fingerprint)
        if r.kind is Kind.INSTANCE and r.image in need else r
        for k, r in state.resources.items()}
    for s in {s.fingerprint: s for s in need.values()}.values():
        img = Resource(kind=Kind.IMAGE, name=s.fingerprint, description=s.name,
                       config=frozen_map({"alias": s.alias}), image=str(s.tarball))
        res[img.key] = img
    # replace() keeps every other field of the state (owner, firewall, ...) as it is.
    return replace(state, resources=frozen_map(res))


def _present(incus: Incus, fingerprint: str) -> bool:
    try:
        incus.get(f"/1.0/images/{fingerprint}")
        return True
    except IncusError:
        return False


def _import(tarball: str) -> None:
    # The incus client streams the tarball to the daemon; the API wrapper only sends JSON.
    env = {**os.environ, "HOME": os.environ.get("HOME") or "/root"}
    run(["incus", "image", "import", tarball], timeout=IMPORT_TIMEOUT, env=env)


def import_image(incus: Incus, r: Resource) -> None:
    """The executor's `+ image`: import the shipped tarball, check that Incus now lists the
    fingerprint image.json promised, then point the alias at it."""
    log.event(_log, "Importing shipped image", image=r.description, file=r.image)
    try:
        _import(r.image)
    except subprocess.TimeoutExpired as e:
        raise AnklumeError(f"importing {r.image} took more than {IMPORT_TIMEOUT} s") from e
    if not _present(incus, r.name):
        raise AnklumeError(f"Incus does not list {r.name} after importing {r.image} (the file "
                           "does not match image.json)")
    set_alias(incus, r)


def set_alias(incus: Incus, r: Resource) -> None:
    """Point the shipped image's alias at it; an older OS's image loses the alias."""
    alias = r.config["alias"]
    try:
        have = incus.get(f"/1.0/images/aliases/{alias}")
    except IncusError:
        have = None
    if have and have.get("target") == r.name:
        return
    if have:
        incus.request("DELETE", f"/1.0/images/aliases/{alias}")
    incus.request("POST", "/1.0/images/aliases", body={
        "name": alias, "target": r.name, "description": f"shipped with the OS ({r.description})"})
