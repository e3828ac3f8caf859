"""Observed state: what Incus has now, read in a handful of recursive requests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from anklume.agent.incus_api import Incus
from anklume.agent.model import frozen_map
from anklume.agent.resources import Kind, Resource, State


def _devices(d: Mapping[str, Mapping[str, Any]] | None) -> Mapping[str, Mapping[str, str]]:
    return frozen_map({k: frozen_map({a: str(b) for a, b in v.items()})
                       for k, v in (d or {}).items()})


def _cfg(d: Mapping[str, Any] | None) -> Mapping[str, str]:
    return frozen_map({k: str(v) for k, v in (d or {}).items()})


def vm_unsupported(server: Mapping[str, Any], host: Mapping[str, Any] | None = None) -> str | None:
    """Why this Incus cannot run VMs, from GET /1.0 and host facts (None: it can)."""
    drivers = [d.strip() for d in str(server.get("environment", {}).get("driver", "")).split("|")]
    if "qemu" in drivers:
        return None
    why = "usually /dev/vhost-vsock is missing (no vhost_vsock kernel module) or QEMU is absent"
    if host is not None and not host.get("vhost_vsock", True):
        why = "this host has no /dev/vhost-vsock (its kernel lacks the vhost_vsock module)"
    return f"Incus here has no VM driver (drivers: {', '.join(d for d in drivers if d)}): {why}"


def parse(raw: Mapping[str, Any]) -> State:
    """Observed state from recorded API answers: {"server": GET /1.0, "projects": [...],
    "networks": [...], "profiles": [...], "instances": [...], "images": [...]} (each a
    recursion=1 list).
    Pure, so the planner's fixtures are the daemon's own JSON."""
    out: list[Resource] = []
    for p in raw.get("projects", []):
        out.append(Resource(kind=Kind.PROJECT, name=p["name"], description=p.get("description", ""),
                            config=_cfg(p.get("config")), used_by=tuple(p.get("used_by") or ())))
    for n in raw.get("networks", []):
        # Host interfaces show up here too (unmanaged): they are not ours to manage.
        if not n.get("managed"):
            continue
        out.append(Resource(kind=Kind.NETWORK, name=n["name"], project=n.get("project", "default"),
                            description=n.get("description", ""), config=_cfg(n.get("config")),
                            used_by=tuple(n.get("used_by") or ())))
    for p in raw.get("profiles", []):
        out.append(Resource(kind=Kind.PROFILE, name=p["name"], project=p.get("project", "default"),
                            description=p.get("description", ""), config=_cfg(p.get("config")),
                            devices=_devices(p.get("devices")),
                            used_by=tuple(p.get("used_by") or ())))
    for i in raw.get("instances", []):
        out.append(Resource(
            kind=Kind.INSTANCE, name=i["name"], project=i.get("project", "default"),
            description=i.get("description", ""), config=_cfg(i.get("config")),
            devices=_devices(i.get("devices")), profiles=tuple(i.get("profiles") or ()),
            instance_type=i.get("type", ""), status=i.get("status", ""),
            architecture=i.get("architecture", "")))
    for img in raw.get("images", []):
        # Which aliases point at it: the planner moves the shipped image's alias onto it.
        names = sorted(a["name"] for a in img.get("aliases") or () if a.get("name"))
        out.append(Resource(kind=Kind.IMAGE, name=img["fingerprint"],
                            config=frozen_map({"aliases": ",".join(names)})))
    return State.of(out, vm_unsupported=vm_unsupported(raw.get("server", {}), raw.get("host")))


def read_raw(incus: Incus) -> dict[str, Any]:
    """The API answers `parse` needs: six requests whatever the number of instances."""
    every = {"recursion": "1", "all-projects": "true"}
    return {
        "server": incus.get("/1.0"),
        # Incus runs on this machine: what it lacks for VMs can be seen from here.
        "host": {"vhost_vsock": os.path.exists("/dev/vhost-vsock")},
        "projects": incus.get("/1.0/projects", params={"recursion": "1"}),
        # Our bridges live in the default project (domain projects keep features.networks off).
        "networks": incus.get("/1.0/networks", params={"recursion": "1"}),
        "profiles": incus.get("/1.0/profiles", params=every),
        "instances": incus.get("/1.0/instances", params=every),
        # Images live in the default project: domain projects keep features.images off.
        "images": incus.get("/1.0/images", params={"recursion": "1"}),
    }


def observe(incus: Incus | None = None) -> State:
    return parse(read_raw(incus or Incus()))
