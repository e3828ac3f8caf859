"""Where `anklume flash` looks at the machine: lsblk's tree, /sys, mountinfo and udev.

lsblk gives the tree (partitions, file systems, what is stacked and mounted on them) and is
read with anklume/lsblk.py. /sys answers what lsblk cannot be trusted with: whether a disk
sits on USB (its device path), which disk a mounted device-mapper target really lives on
(`slaves/`). udev (pyudev) only enriches: where no udevd runs (a container, an early boot) it
has no database and sends no events, so waiting for a stick listens to the kernel's own
uevents instead and polls /sys/block in any case.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, cast

from anklume import exitcodes, lsblk
from anklume.errors import TemporaryError
from anklume.image.flash import Partition, Target
from anklume.run import run

COLUMNS = lsblk.DISK_COLUMNS + ",MAJ:MIN,PARTUUID"
# systemd-boot's record of the ESP it was started from.
LOADER_PARTUUID = "LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
# lsblk types that are a whole disk we could write; anything else is stacked or optical.
WHOLE = {"disk": "disk", "loop": "loop", "part": "part"}


class NoStickArrived(TemporaryError):
    exit_code = exitcodes.TEMPFAIL  # as the agent's --no-wait: try again later


# What this module uses of pyudev's objects (pyudev has no type information).
class _Attributes(Protocol):
    def asstring(self, attribute: str) -> str: ...


class UdevMonitor(Protocol):
    def poll(self, timeout: float | None = None) -> object: ...


def read_tree() -> Mapping[str, Any]:
    """This machine's block devices, as lsblk prints them (`{"blockdevices": [...]}`)."""
    out = run(["lsblk", "--json", "--bytes", "--tree", "--output", COLUMNS]).stdout
    return {"blockdevices": lsblk.parse(out)}


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_by_devnum(mountinfo: str) -> dict[str, list[str]]:
    """`major:minor` of each mounted device -> its mount points."""
    found: dict[str, list[str]] = {}
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) >= 5:
            found.setdefault(parts[2], []).append(_unescape(parts[4]))
    return found


def disks_under(devnum: str, sys_root: Path = Path("/sys")) -> set[str]:
    """The whole disks a block device lives on: its parent for a partition, the disks under
    every slave for a device-mapper or md device (dm-verity's /usr lives on a partition)."""
    node = sys_root / "dev" / "block" / devnum
    if not node.exists():
        return set()  # tmpfs, overlay, a network file system: no block device
    return _disks_of(node.resolve(), depth=0)


def _disks_of(node: Path, depth: int) -> set[str]:
    if depth > 8:
        return set()
    if (node / "partition").exists():
        return _disks_of(node.parent, depth + 1)
    slaves = node / "slaves"
    below = sorted(slaves.iterdir()) if slaves.is_dir() else []
    if not below:
        return {node.name}
    return set().union(*(_disks_of(s.resolve(), depth + 1) for s in below))


def booted_esp_partuuid(efivars: Path = Path("/sys/firmware/efi/efivars")) -> str | None:
    try:
        raw = (efivars / LOADER_PARTUUID).read_bytes()
    except OSError:
        return None  # not booted by systemd-boot (or not EFI at all)
    # 4 bytes of attributes, then UTF-16LE text ending in NUL.
    return raw[4:].decode("utf-16-le", errors="ignore").rstrip("\0").strip().lower() or None


def sys_usb(name: str, sys_root: Path = Path("/sys")) -> bool:
    """USB-attached: the disk's device path goes through a USB host controller's port."""
    path = sys_root / "block" / name
    try:
        return "/usb" in str(path.resolve())
    except OSError:
        return False


def _sys_removable(name: str, sys_root: Path) -> bool:
    try:
        return (sys_root / "block" / name / "removable").read_text().strip() == "1"
    except OSError:
        return False


def _sys_size(name: str, sys_root: Path) -> int:
    try:
        return int((sys_root / "block" / name / "size").read_text()) * 512
    except (OSError, ValueError):
        return 0


def udev_identity(name: str) -> tuple[str | None, str | None]:
    """Model and serial from udev's database, or from the USB device's own sysfs attributes
    (pyudev reads those without udevd); (None, None) when pyudev is missing."""
    try:
        import pyudev
    except ImportError:
        return None, None
    try:
        dev = pyudev.Devices.from_name(pyudev.Context(), "block", name)
    except (pyudev.DeviceNotFoundError, OSError):
        return None, None
    model, serial = dev.get("ID_MODEL"), dev.get("ID_SERIAL_SHORT")
    usb = dev.find_parent("usb", "usb_device")
    if usb is not None:
        attrs = usb.attributes
        model = model or _attr(attrs, "product")
        serial = serial or _attr(attrs, "serial")
    return model, serial


def _attr(attrs: _Attributes, key: str) -> str | None:
    try:
        return attrs.asstring(key).strip() or None
    except (KeyError, UnicodeDecodeError):
        return None


def boot_reasons(doc: Mapping[str, Any], mountinfo: str, sys_root: Path = Path("/sys"),
                 esp_partuuid: str | None = None) -> dict[str, str]:
    """Disk name -> why it holds the running system: a system mount found through mountinfo
    and /sys (robust to dm-verity and a tmpfs root), or the ESP the boot loader came from."""
    reasons: dict[str, list[str]] = {}
    for devnum, points in mounts_by_devnum(mountinfo).items():
        system = sorted(lsblk.SYSTEM_MOUNTS & set(points))
        for disk in disks_under(devnum, sys_root) if system else ():
            reasons.setdefault(disk, []).extend(f"{p} is mounted from it" for p in system)
    if esp_partuuid:
        for top in doc.get("blockdevices") or ():
            if any(str(n.get("partuuid") or "").lower() == esp_partuuid for n in lsblk.walk(top)):
                reasons.setdefault(str(top.get("name")), []).append(
                    "the boot loader started from its ESP")
    return {d: "; ".join(dict.fromkeys(r)) for d, r in reasons.items()}


def target_from_node(top: lsblk.Device, sys_root: Path, boot: Mapping[str, str],
                     mounted: Mapping[str, tuple[str, ...]]) -> Target:
    """One top-level lsblk node (a disk or loop device, with its subtree) as a Target."""
    name = str(top.get("name", ""))
    nodes = list(lsblk.walk(top))
    points = {m for n in nodes for m in (n.get("mountpoints") or ()) if m}
    points |= set(mounted.get(name, ()))
    lsblk_system = sorted(lsblk.SYSTEM_MOUNTS & points)
    reason = boot.get(name) or (
        ", ".join(lsblk_system) + " mounted from it" if lsblk_system else None)
    parts = tuple(
        Partition(str(n.get("name")), int(n.get("size") or 0), lsblk.text(n.get("fstype")),
                  lsblk.text(n.get("partlabel")),
                  tuple(m for m in (n.get("mountpoints") or ()) if m))
        for n in top.get("children") or () if n.get("type") == "part")
    holders = tuple(str(n.get("name")) for n in nodes[1:] if n.get("type") != "part")
    model, serial = lsblk.text(top.get("model")), lsblk.text(top.get("serial"))
    if not (model and serial) and top.get("type") == "disk":
        u_model, u_serial = udev_identity(name)
        model, serial = model or u_model, serial or u_serial
    return Target(
        path=str(top.get("path") or f"/dev/{name}"),
        kind=WHOLE.get(str(top.get("type")), "other"),
        size=int(top.get("size") or 0),
        model=model, serial=serial, transport=lsblk.text(top.get("tran")),
        removable=lsblk.flag(top.get("rm")) or _sys_removable(name, sys_root),
        usb=lsblk.text(top.get("tran")) == "usb" or sys_usb(name, sys_root),
        read_only=lsblk.flag(top.get("ro")),
        pttype=lsblk.text(top.get("pttype")), fstype=lsblk.text(top.get("fstype")),
        mounts=tuple(sorted(points)), holders=holders, partitions=parts, boot=reason,
    )


def _mounted_disks(mountinfo: str, sys_root: Path) -> dict[str, tuple[str, ...]]:
    found: dict[str, set[str]] = {}
    for devnum, points in mounts_by_devnum(mountinfo).items():
        for disk in disks_under(devnum, sys_root):
            found.setdefault(disk, set()).update(points)
    return {d: tuple(sorted(p)) for d, p in found.items()}


def scan(doc: Mapping[str, Any] | None = None, mountinfo: str | None = None,
         sys_root: Path = Path("/sys"), esp_partuuid: str | None = None) -> list[Target]:
    """Every whole disk and loop device, with what lives on it."""
    doc = read_tree() if doc is None else doc
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        esp_partuuid = esp_partuuid or booted_esp_partuuid(sys_root / "firmware/efi/efivars")
    boot = boot_reasons(doc, mountinfo, sys_root, esp_partuuid)
    mounted = _mounted_disks(mountinfo, sys_root)
    return sorted((target_from_node(top, sys_root, boot, mounted)
                   for top in doc.get("blockdevices") or ()
                   if top.get("type") in ("disk", "loop")), key=lambda t: t.path)


def target(path: str, doc: Mapping[str, Any] | None = None, mountinfo: str | None = None,
           sys_root: Path = Path("/sys"), esp_partuuid: str | None = None) -> Target:
    """What `path` is: a disk from `scan`, a partition, a file, or something else."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        creatable = Path(path).parent.is_dir() and not path.startswith("/dev/")
        return Target(path, "new-file" if creatable else "other")
    if stat.S_ISREG(st.st_mode):
        return Target(path, "file", size=st.st_size)
    if not stat.S_ISBLK(st.st_mode):
        return Target(path, "other")
    # By device number, so /dev/disk/by-id/... names and the kernel name agree.
    devnum = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    doc = read_tree() if doc is None else doc
    whole = {t.path: t for t in scan(doc, mountinfo, sys_root, esp_partuuid)}
    for top in doc.get("blockdevices") or ():
        disk = whole.get(str(top.get("path") or f"/dev/{top.get('name')}"))
        for n in lsblk.walk(top):
            if n.get("maj:min") != devnum:
                continue
            if n is top and disk is not None:
                return with_signatures(disk)
            return Target(str(n.get("path") or path), WHOLE.get(str(n.get("type")), "other"),
                          size=int(n.get("size") or 0), parent=disk.path if disk else None)
    return Target(path, "absent")


def with_signatures(t: Target) -> Target:
    """Fill in the partition table and file system types lsblk left out: without a udev
    database lsblk reports none, and the user must see what is about to be erased."""
    if t.pttype or t.fstype or t.partitions:
        return t
    proc = run(["blkid", "--probe", "--output", "export", t.path], check=False)
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return replace(t, pttype=found.get("PTTYPE"), fstype=found.get("TYPE"))


def _present(sys_root: Path) -> dict[str, bool]:
    """Disk name -> whether it is a stick with a medium in it (a card reader without a card
    has size 0)."""
    block = sys_root / "block"
    names = sorted(os.listdir(block)) if block.is_dir() else []
    return {n: _sys_size(n, sys_root) > 0 and (_sys_removable(n, sys_root) or sys_usb(n, sys_root))
            for n in names}


def wait_for_stick(timeout: float, sys_root: Path = Path("/sys"), interval: float = 0.5,
                   clock: Callable[[], float] = time.monotonic) -> str:
    """The name of the first stick plugged in after the call (bounded by `timeout`).

    A uevent wakes us early; /sys/block is scanned on every wake-up and every `interval`
    regardless, since events can be lost or never sent (a container sees none)."""
    before = {n for n, stick in _present(sys_root).items() if stick}
    monitor = udev_monitor() if sys_root == Path("/sys") else None
    deadline = clock() + timeout
    while True:
        arrived = [n for n, stick in _present(sys_root).items() if stick and n not in before]
        if arrived:
            return arrived[0]
        left = deadline - clock()
        if left <= 0:
            raise NoStickArrived(f"no stick was plugged in within {timeout:.0f} s",
                                 hint="plug it in and run again, or raise --timeout")
        if monitor is not None:
            monitor.poll(timeout=min(interval, left))
        else:
            time.sleep(min(interval, left))


def udev_monitor() -> UdevMonitor | None:
    """A started pyudev monitor of block devices: udevd's events where it runs (sent once its
    rules have run), else the kernel's own uevents, which arrive without udevd; None without
    pyudev or netlink."""
    source = "udev" if Path("/run/udev/control").exists() else "kernel"
    try:
        import pyudev

        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=source)
        monitor.filter_by("block")
        monitor.start()
        return cast(UdevMonitor, monitor)
    except (ImportError, OSError):
        return None
