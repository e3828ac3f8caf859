"""`anklume flash`: what a target is, whether it may be written, and what the user is told.

Pure: a `Target` is built by `flash_devices` (lsblk, sysfs, mountinfo) or by a test, and every
refusal is decided here before anything is opened for writing. The rules:

- a whole disk only (not a partition), writable, at least as large as the image;
- never the disk the running system boots from, never a mounted or otherwise held disk
  (neither is overridable: unmount it yourself, or pick another disk);
- a disk that is neither removable nor USB-attached (an internal disk, a loop device) needs
  `--force`;
- a regular file: a new file is created; an existing one is overwritten only with `--force`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from anklume.errors import PermanentError

GiB = 1024**3
MiB = 1024**2


class FlashRefused(PermanentError):
    """The target may not be written; nothing was."""


@dataclass(frozen=True)
class Partition:
    name: str
    size: int
    fstype: str | None
    label: str | None
    mounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    path: str
    kind: str  # "disk", "loop", "part", "file", "new-file", "absent"
    # (a block device lsblk does not list) or "other" (char device, directory, dm device)
    size: int = 0  # bytes; 0 for files
    model: str | None = None
    serial: str | None = None
    transport: str | None = None  # lsblk TRAN: usb, sata, nvme...
    removable: bool = False
    usb: bool = False  # attached through USB (sysfs path), even when not flagged removable
    read_only: bool = False
    pttype: str | None = None
    fstype: str | None = None  # a file system on the whole disk, without partitions
    mounts: tuple[str, ...] = ()  # on the disk, its partitions, or anything stacked on them
    holders: tuple[str, ...] = ()  # dm/md/... devices stacked on it, mounted or not
    partitions: tuple[Partition, ...] = ()
    boot: str | None = None  # why this is the running system's disk; None if it is not
    parent: str | None = None  # for a partition: its whole disk

    @property
    def is_file(self) -> bool:
        return self.kind in ("file", "new-file")

    @property
    def stick_like(self) -> bool:
        return self.kind == "disk" and (self.removable or self.usb)


@dataclass(frozen=True)
class Plan:
    image: str
    image_size: int
    target: Target
    warnings: tuple[str, ...] = field(default=())


def human(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def refusals(target: Target, image_size: int, force: bool = False) -> list[str]:
    """Every reason not to write `target`, most fundamental first (empty: it may be written)."""
    t = target
    if t.kind == "absent":
        return [f"{t.path} has no medium: lsblk does not list it (an empty card reader, "
                "a loop device with no file attached)"]
    if t.kind == "other":
        return [f"{t.path} is not a whole disk, a partition or a regular file"]
    if t.kind == "part":
        disk = f" {t.parent}" if t.parent else ""
        return [f"{t.path} is a partition: the image holds its own partition table, "
                f"give the whole disk{disk}"]
    if t.kind == "file":
        return [] if force else [
            f"{t.path} is an existing file: pass --force to overwrite it with the image"]
    if t.kind == "new-file":
        return []
    found = []
    if t.boot:
        found.append(f"{t.path} holds the running system ({t.boot}): never written")
    if t.mounts:
        found.append(f"{t.path} is mounted ({', '.join(t.mounts)}): unmount it first")
    if t.holders:
        found.append(f"{t.path} is in use by {', '.join(t.holders)}: close it first")
    if t.read_only:
        found.append(f"{t.path} is read-only")
    if t.size < image_size:
        found.append(f"{t.path} is too small: {human(t.size)} < the image's "
                     f"{human(image_size)} ({t.size} < {image_size} bytes)")
    if not t.stick_like and not force:
        what = ("a loop device (counted as a fixed disk)" if t.kind == "loop"
                else "not removable and not on USB: it may be an internal disk")
        found.append(f"{t.path} is {what}; pass --force if you really mean it")
    return found


def plan(image: str, image_size: int, target: Target, force: bool = False) -> Plan:
    """The write to do, or FlashRefused naming every reason it is not allowed."""
    found = refusals(target, image_size, force)
    if found:
        raise FlashRefused(
            "refusing to write " + target.path + ":\n  - " + "\n  - ".join(found),
            hint="nothing was written; `anklume flash IMAGE` lists the sticks that can be",
        )
    warnings = []
    if force and not target.is_file and not target.stick_like:
        warnings.append(f"{target.path} is not a removable disk (--force given)")
    return Plan(image, image_size, target, tuple(warnings))


def candidates(targets: list[Target], image_size: int = 0) -> list[Target]:
    """The disks worth offering: sticks that no rule refuses without --force."""
    return [t for t in targets if t.stick_like and not refusals(t, image_size)]


def describe(t: Target) -> list[str]:
    """What the user is about to erase."""
    if t.is_file:
        state = "exists, will be overwritten" if t.kind == "file" else "will be created"
        return [f"  {t.path}  regular file ({state})"]
    what = ", ".join(x for x in (t.model, t.serial and f"serial {t.serial}",
                                 t.transport, "removable" if t.removable else None) if x)
    lines = [f"  {t.path}  {human(t.size)}  {what or 'no model or serial'}"]
    if t.pttype:
        lines.append(f"  partition table: {t.pttype}")
    if t.fstype:
        lines.append(f"  file system on the whole disk: {t.fstype}")
    for p in t.partitions:
        fs = p.fstype or "no file system"
        label = f" label {p.label}" if p.label else ""
        mounted = f" mounted at {', '.join(p.mounts)}" if p.mounts else ""
        lines.append(f"    {p.name}  {human(p.size)}  {fs}{label}{mounted}")
    if not (t.pttype or t.fstype or t.partitions):
        lines.append("  no partition table or file system found")
    return lines


def listing(targets: list[Target], image_size: int) -> list[str]:
    """The candidate sticks, and how to pick one."""
    found = candidates(targets, image_size)
    if not found:
        lines = ["No removable or USB disk found that can take the image."]
        others = [t for t in targets if t.stick_like]
        for t in others:
            lines.append(f"  {t.path}: " + "; ".join(refusals(t, image_size)))
        lines.append("Plug a stick in and run again, or wait for one with --wait.")
        return lines
    lines = ["Disks that can take the image:"]
    for t in found:
        lines.extend(describe(t))
    lines.append(f"Write it with: anklume flash IMAGE {found[0].path}")
    return lines


def confirmation(yes: bool, interactive: bool) -> bool:
    """Whether to ask (True) or go ahead (False); refuse when nobody can answer."""
    if yes:
        return False
    if not interactive:
        raise FlashRefused("no terminal to confirm on and --yes not given",
                           hint="nothing was written; pass --yes to write without asking")
    return True
