"""Disk references that survive a reboot: a /dev/disk/by-id name, a WWN or a serial.

Kernel names (/dev/sda, /dev/nvme0n1) follow probe order and change when a disk is added or a
controller is slow; a pool pointer or an `erase` confirmation must never depend on them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from anklume.firstboot.disks import Disk

BY_ID = Path("/dev/disk/by-id")

_KERNEL_NAME = re.compile(r"^(/dev/)?(sd[a-z]+|vd[a-z]+|hd[a-z]+|xvd[a-z]+|nvme\d+n\d+|mmcblk\d+)"
                          r"(p?\d+)?$")
_PART_LINK = re.compile(r"-part\d+$")
# Preferred name for the pool pointer when the user gave a serial or WWN: the bus-model-serial
# names read well on a plan screen; wwn-/eui. names come next.
_PREFERENCE = ("ata-", "nvme-", "scsi-", "usb-", "virtio-", "wwn-")


class DiskRefError(ValueError):
    """The reference cannot name one whole disk; the message says why."""


@dataclass(frozen=True)
class Target:
    disk: Disk
    by_id: str  # the /dev/disk/by-id name used for every command and stored as the pointer

    @property
    def path(self) -> str:
        return str(BY_ID / self.by_id)


def read_by_id(directory: Path = BY_ID) -> dict[str, str]:
    """{by-id name: kernel device path} of the running system (empty where udev made none)."""
    if not directory.is_dir():
        return {}
    return {link.name: os.path.realpath(link) for link in sorted(directory.iterdir())}


def is_kernel_name(ref: str) -> bool:
    return bool(_KERNEL_NAME.match(ref.strip()))


def links_of(disk: Disk, by_id: Mapping[str, str]) -> list[str]:
    """The by-id names of the whole disk (no -partN), preferred first."""
    names = [n for n, dev in by_id.items() if dev == disk.path and not _PART_LINK.search(n)]

    def rank(n: str) -> tuple[int, str]:
        hits = [i for i, p in enumerate(_PREFERENCE) if n.startswith(p)]
        return (hits[0] if hits else len(_PREFERENCE), n)

    return sorted(names, key=rank)


def _norm_wwn(value: str) -> str:
    v = value.lower().removeprefix("wwn-")
    return v.removeprefix("0x")


def resolve(ref: str, disks: Sequence[Disk], by_id: Mapping[str, str]) -> Target:
    """The one whole disk `ref` names, or DiskRefError saying why not."""
    ref = ref.strip()
    if not ref:
        raise DiskRefError("empty disk reference")
    if is_kernel_name(ref):
        raise DiskRefError(
            f"{ref!r} is a kernel device name: those follow probe order and can name another "
            "disk at the next boot; give its /dev/disk/by-id name, WWN or serial "
            "(`anklume firstboot detect` lists them)")
    by_path = {d.path: d for d in disks}
    name = ref.removeprefix(str(BY_ID) + "/")
    if name in by_id:
        if _PART_LINK.search(name):
            raise DiskRefError(f"{ref!r} is a partition; name the whole disk")
        disk = by_path.get(by_id[name])
        if disk is None:
            raise DiskRefError(f"{ref!r} points at {by_id[name]}, which is not a whole disk")
        return Target(disk, name)
    if "/" in ref:
        raise DiskRefError(f"{ref!r} is not in {BY_ID}; give a by-id name, WWN or serial")
    matches = [d for d in disks
               if (d.serial and d.serial == ref)
               or (d.wwn and _norm_wwn(d.wwn) == _norm_wwn(ref))]
    if not matches:
        raise DiskRefError(f"no disk has the by-id name, WWN or serial {ref!r}")
    if len(matches) > 1:
        raise DiskRefError(f"{ref!r} matches several disks ("
                           + ", ".join(d.path for d in matches) + "); give its by-id name")
    links = links_of(matches[0], by_id)
    if not links:
        raise DiskRefError(f"{ref!r} ({matches[0].path}) has no {BY_ID} name (a virtual disk "
                           "without a serial?): it could not be found again at the next boot")
    return Target(matches[0], links[0])
