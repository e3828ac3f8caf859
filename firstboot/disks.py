"""Which disks can hold the encrypted data pool (pure: lsblk's JSON in, decisions out; read
with anklume/lsblk.py, which says why lsblk is the source)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from anklume import lsblk

# Below this a data pool makes no sense (instances, images, snapshots).
MIN_POOL_BYTES = 4 * 1024**3

# Partition labels the image gives its own partitions (image/LAYOUT.md); `_empty` is slot B
# before its first update.
IMAGE_LABEL_PREFIXES = ("anklume_", "anklume-", "_empty")

# Signatures of a pool we could import rather than create.
POOL_SIGNATURES = {"zfs_member": "zfs", "crypto_LUKS": "luks"}

@dataclass(frozen=True)
class Disk:
    path: str
    size: int  # bytes
    model: str | None
    serial: str | None
    transport: str | None
    removable: bool
    rotational: bool
    signatures: tuple[str, ...]  # partition table type and filesystem/container types found
    mounts: tuple[str, ...]  # mount points on the disk or anything on top of it
    image: bool  # carries anklume's own partitions (the boot medium, or another stick)
    unusable: str | None  # why it cannot hold the pool; None if it can
    wwn: str | None = None
    pool_id: str | None = None  # zpool GUID (decimal) or LUKS UUID of an existing pool
    pool_label: str | None = None  # zpool name of an existing ZFS pool

    @property
    def candidate(self) -> bool:
        return self.unusable is None

    @property
    def empty(self) -> bool:
        """No partition table and no signature: creating a pool destroys nothing."""
        return not self.signatures

    @property
    def existing_pool(self) -> str | None:
        """'zfs' or 'luks' when the disk (or a partition) carries a pool to import."""
        for sig in self.signatures:
            if sig in POOL_SIGNATURES:
                return POOL_SIGNATURES[sig]
        return None


def from_lsblk(doc: Mapping[str, Any]) -> list[Disk]:
    """Every whole disk in `lsblk --json --bytes --output` lsblk.DISK_COLUMNS (tree form)."""
    disks = []
    for top in doc.get("blockdevices") or ():
        if top.get("type") != "disk":
            continue  # loop, rom, ... are never pool disks
        name = str(top.get("name", ""))
        nodes = list(lsblk.walk(top))
        mounts = tuple(sorted({m for n in nodes for m in (n.get("mountpoints") or ()) if m}))
        labels = [str(n.get("partlabel") or "") for n in nodes]
        signatures = tuple(dict.fromkeys(
            s for n in nodes for s in (lsblk.text(n.get("pttype")), lsblk.text(n.get("fstype")))
            if s))
        image = any(lbl.startswith(IMAGE_LABEL_PREFIXES) for lbl in labels)
        size = int(top.get("size") or 0)
        pool = next((n for n in nodes if n.get("fstype") in POOL_SIGNATURES), None)
        disk = Disk(
            path=str(top.get("path") or f"/dev/{name}"),
            size=size,
            model=lsblk.text(top.get("model")),
            serial=lsblk.text(top.get("serial")),
            transport=lsblk.text(top.get("tran")),
            removable=lsblk.flag(top.get("rm")),
            rotational=lsblk.flag(top.get("rota")),
            signatures=signatures,
            mounts=mounts,
            image=image,
            unusable=_unusable(name, size, lsblk.flag(top.get("ro")), mounts, image),
            wwn=lsblk.text(top.get("wwn")),
            pool_id=lsblk.text(pool.get("uuid")) if pool else None,
            pool_label=lsblk.text(pool.get("label")) if pool else None,
        )
        disks.append(disk)
    return sorted(disks, key=lambda d: d.path)


def _unusable(name: str, size: int, read_only: bool, mounts: tuple[str, ...],
              image: bool) -> str | None:
    if name.startswith(("zram", "ram")):
        return "memory-backed (zram)"
    if read_only:
        return "read-only"
    if lsblk.SYSTEM_MOUNTS & set(mounts):
        return ("holds the running system ("
                + ", ".join(sorted(lsblk.SYSTEM_MOUNTS & set(mounts))) + ")")
    if image:
        return "an anklume boot medium"
    if mounts:
        return "in use (mounted at " + ", ".join(mounts) + ")"
    if size < MIN_POOL_BYTES:
        return f"too small ({size / 1024**3:.1f} GiB < {MIN_POOL_BYTES // 1024**3} GiB)"
    return None
