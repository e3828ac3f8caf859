"""Checks against this system that validation cannot make, run by reconcile before applying.

- Persistent data and shared volumes must live on persistent storage: a host directory on a
  tmpfs or ramfs would be lost at the next boot, so it is refused (path and machine named).
- Their disks are idmapped (`shift=true`) for unprivileged containers: the kernel and Incus
  must support idmapped mounts.
- A host directory under one of anklume's data roots must stay under it once its symlinks
  are resolved: a machine with write access to one share could otherwise plant a link that
  hands another machine `/` (validation only sees the path as written).
- The storage pool the projects' root disks use must exist.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Sequence

from anklume.agent import containment
from anklume.agent.incus_api import Incus, IncusError
from anklume.agent.resources import Kind, State

VOLATILE_FS = ("tmpfs", "ramfs")
MOUNTINFO = "/proc/self/mountinfo"


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, ch)
    return field


def mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of each line of /proc/self/mountinfo."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        parts = left.split()
        if sep and len(parts) >= 5 and right.split():
            out.append((_unescape(parts[4]), right.split()[0]))
    return out


def fs_of(path: str, table: list[tuple[str, str]]) -> tuple[str, str]:
    """(mount point, type) holding `path`: the longest mount point above it (the last one
    mounted there wins, as the kernel resolves it)."""
    best = ("/", "")
    for point, fstype in table:
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def existing_parent(path: str) -> str:
    """`path`, or its nearest existing parent (apply creates the missing rest)."""
    path = posixpath.normpath(path)
    while not os.path.exists(path) and path != "/":
        path = posixpath.dirname(path)
    return os.path.realpath(path)


def _host_dirs(want: State) -> Iterator[tuple[str, str, str]]:
    """(instance label, device, source) of each persistent data or shared volume disk."""
    for r in want.of_kind(Kind.INSTANCE):
        for dev, conf in sorted(r.devices.items()):
            if dev.startswith(("pd-", "sv-")) and conf.get("type") == "disk" \
                    and conf.get("source"):
                yield f"{r.project}/{r.name}", dev, conf["source"]


def resolved(path: str) -> str:
    """`path` with the symlinks of its existing part resolved and the missing rest kept."""
    head = posixpath.normpath(path)
    tail: list[str] = []
    while not os.path.lexists(head) and head != "/":
        head, last = posixpath.split(head)
        tail.insert(0, last)
    return posixpath.join(os.path.realpath(head), *tail)


def _host_sources(want: State) -> Iterator[tuple[str, str, str]]:
    """(owner, device, source) of every disk device from a host path, in instances and
    profiles (a profile's device reaches every machine using it)."""
    for kind, label in ((Kind.INSTANCE, "machine"), (Kind.PROFILE, "profile")):
        for r in want.of_kind(kind):
            for dev, conf in sorted(r.devices.items()):
                source = conf.get("source") or ""
                if conf.get("type") == "disk" and source.startswith("/"):
                    yield f"{label} {r.project}/{r.name}", dev, source


def escaping_dirs(want: State, roots: Sequence[str]) -> list[str]:
    """Sources written under a data root that lead out of it through a symlink. A source
    outside every root is validation's business (it takes `unsafe: [host-path]`)."""
    errors = []
    for who, dev, source in _host_sources(want):
        root = next((r for r in roots if containment.inside(source, [r])), None)
        if root is None:
            continue
        real = resolved(source)
        if not containment.inside(real, [resolved(root)]):
            errors.append(f"{who}: {dev} takes {source}, which a symlink leads to {real}, "
                          f"outside {root}: remove the link (a machine that can write there "
                          "may have planted it)")
    return errors


def volatile_dirs(want: State, mountinfo: str) -> list[str]:
    table = mounts(mountinfo)
    errors = []
    for who, dev, source in _host_dirs(want):
        point, fstype = fs_of(existing_parent(source), table)
        if fstype in VOLATILE_FS:
            errors.append(f"machine {who}: {dev} keeps its data in {source}, on a {fstype} "
                          f"({point}) that is lost at reboot: put it on persistent storage "
                          "(global.persistent_data_base, global.shared_volumes_base or the "
                          "volume's source)")
    return errors


def _shifted(want: State) -> list[str]:
    return sorted({f"{r.project}/{r.name}" for r in want.of_kind(Kind.INSTANCE)
                   for d in r.devices.values() if d.get("shift") == "true"})


def _pools(want: State) -> list[str]:
    return sorted({d["pool"] for r in want.of_kind(Kind.PROFILE) for d in r.devices.values()
                   if d.get("type") == "disk" and d.get("pool")})


def check(want: State, incus: Incus, mountinfo: str | None = None,
          roots: Sequence[str] = ()) -> list[str]:
    """Every problem found, as messages; [] when applying may go ahead. `roots`: the data
    roots (global.persistent_data_base, global.shared_volumes_base)."""
    if mountinfo is None:
        with open(MOUNTINFO, encoding="utf-8") as f:
            mountinfo = f.read()
    errors = escaping_dirs(want, roots) + volatile_dirs(want, mountinfo)
    for pool in _pools(want):
        try:
            incus.get(f"/1.0/storage-pools/{pool}")
        except IncusError as e:
            errors.append(f'storage pool "{pool}" is not usable ({e}): create it in Incus '
                          "(incus storage create) before applying")
    shifted = _shifted(want)
    if shifted:
        server = incus.get("/1.0") or {}
        features = (server.get("environment") or {}).get("kernel_features") or {}
        if str(features.get("idmapped_mounts", "")).lower() != "true":
            errors.append("this kernel or Incus has no idmapped mounts: the volumes of "
                          f"{', '.join(shifted)} would not be writable from unprivileged "
                          "containers")
    return errors
