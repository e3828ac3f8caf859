"""Which /usr slot (A or B) the running system uses: the partition under the dm-verity device
mounted at /usr, placed among the disk's usr partitions (A is the first, as repart made them).
Run from RAM has loop devices there: no slot of the disk is in use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from anklume import lsblk
from anklume.updates.runner import Runner, system

USR_TYPE = "8484680c-9521-48c6-9c11-b0720656f69e"  # usr, x86-64 (Discoverable Partitions)


@dataclass(frozen=True)
class Slot:
    name: str  # "A", "B", ... or "RAM"
    device: str  # the partition (or loop device) under /usr


def from_lsblk(lsblk_json: str, partition: str) -> Slot | None:
    """The slot of `partition` (a kernel name such as vda5) from `lsblk -J -o NAME,PARTTYPE`
    of its disk; None when it is not a usr partition there."""
    usr = [n["name"] for n in lsblk.walk_all(lsblk.parse(lsblk_json))
           if (n.get("parttype") or "").lower() == USR_TYPE]
    if partition not in usr:
        return None
    return Slot("ABCDEFGH"[usr.index(partition)], partition)


def usr_slaves(sys_block: Path = Path("/sys/block"), mounts: Path = Path("/proc/self/mounts")
               ) -> list[str]:
    """Kernel names of the block devices under the device mounted at /usr."""
    for line in mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[1] == "/usr":
            dev = os.path.realpath(fields[0])
            slaves = sys_block / Path(dev).name / "slaves"
            return sorted(p.name for p in slaves.iterdir()) if slaves.is_dir() else []
    return []


def running(runner: Runner = system) -> Slot | None:
    names = usr_slaves()
    if any(n.startswith("loop") for n in names):
        return Slot("RAM", ",".join(names))
    for name in names:
        parent = Path(os.path.realpath(f"/sys/class/block/{name}")).parent.name
        proc = runner(["lsblk", "-J", "-o", "NAME,PARTTYPE", f"/dev/{parent}"])
        if proc.returncode != 0:
            continue
        slot = from_lsblk(proc.stdout, name)
        if slot is not None:
            return slot
    return None
