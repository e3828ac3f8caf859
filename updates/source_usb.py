"""An update carried on a USB stick for machines without network: found by its label.

The stick's filesystem (any the kernel reads, typically FAT or ext4) is labelled
`ANKLUME-UPD` and holds at its root what `anklume publish --out` wrote (`latest` and
`<version>/`). It is mounted read-only, without devices, setuid or exec.
"""

from __future__ import annotations

from pathlib import Path

from anklume import lsblk
from anklume.updates.errors import SourceUnavailable
from anklume.updates.runner import Runner, system

LABEL = "ANKLUME-UPD"
BY_LABEL = Path("/dev/disk/by-label")


def find_device(label: str = LABEL, by_label: Path = BY_LABEL) -> Path | None:
    link = by_label / label
    return link.resolve() if link.exists() else None


def mountpoint_from_lsblk(lsblk_json: str, device: Path) -> Path | None:
    """Where `device` is mounted, from `lsblk --json -o PATH,MOUNTPOINTS` (None: nowhere)."""
    for n in lsblk.walk_all(lsblk.parse(lsblk_json)):
        if n.get("path") == str(device):
            mps = [m for m in (n.get("mountpoints") or []) if m]
            return Path(mps[0]) if mps else None
    return None


def locate(mount_dir: Path, *, label: str = LABEL, by_label: Path = BY_LABEL,
           runner: Runner = system) -> Path:
    """The directory of the stick's update tree, mounting the stick read-only if needed."""
    dev = find_device(label, by_label)
    if dev is None:
        raise SourceUnavailable(f"no filesystem labelled {label} ({by_label}/{label} is absent)",
                                hint=f"plug in the update stick (label its filesystem {label})")
    proc = runner(["lsblk", "--json", "-o", "PATH,MOUNTPOINTS", str(dev)])
    if proc.returncode == 0:
        mp = mountpoint_from_lsblk(proc.stdout, dev)
        if mp is not None:
            return mp
    mount_dir.mkdir(parents=True, exist_ok=True)
    proc = runner(["mount", "-o", "ro,nosuid,nodev,noexec", str(dev), str(mount_dir)])
    if proc.returncode != 0:
        raise SourceUnavailable(f"cannot mount {dev} on {mount_dir}: {proc.stderr}".strip())
    return mount_dir
