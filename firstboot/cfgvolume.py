"""The FAT volume a user prepares on any OS (label ANKLUME-CFG): mounted read-only, only to
read the answers file from it."""

from __future__ import annotations

from pathlib import Path

from anklume import paths
from anklume.firstboot.answers import VOLUME_LABEL
from anklume.run import run

DEVICE = Path("/dev/disk/by-label") / VOLUME_LABEL


def mount_argv(device: Path = DEVICE, target: Path | None = None) -> list[str]:
    target = target or paths.cfg_mount()
    # noexec/nosuid/nodev: the volume is data from outside, never code.
    return ["mount", "-o", "ro,noexec,nosuid,nodev", str(device), str(target)]


def mount(device: Path = DEVICE, target: Path | None = None) -> list[Path]:
    """The mount points to search: [] when no such volume is plugged in."""
    target = target or paths.cfg_mount()
    if not device.exists():
        return []
    target.mkdir(parents=True, exist_ok=True)
    if not target.is_mount():
        run(mount_argv(device, target))
    return [target]


def unmount(target: Path | None = None) -> None:
    target = target or paths.cfg_mount()
    if target.is_mount():
        run(["umount", str(target)], check=False)
