"""Read lsblk's JSON (util-linux): one parser for every feature that looks at block devices.

The first-boot wizard (which disks can hold the pool), `anklume flash` (which disk is the
target), the update's slot (which usr partition runs) and its USB source (where the stick is
mounted) all read the same tree: whole devices at the top, partitions and what is stacked on
them as `children`. lsblk rather than our own sysfs walk: one call gives sizes, models, serials,
mount points and on-disk signatures, and it probes signatures itself where no udev database
exists (a bare host, an early boot). Running lsblk stays with each caller (its own runner).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from anklume.paths import DEFAULT_STATE_DIR

# What the disk-level readers (the wizard, flash) ask for: `lsblk --json --bytes --output`.
# LABEL/UUID: for a zfs_member libblkid reports the pool name and the pool GUID (decimal), for
# crypto_LUKS the LUKS UUID: the stable ids an import needs. WWN: one of the disk references
# the answers file accepts.
DISK_COLUMNS = (
    "NAME,PATH,TYPE,SIZE,RM,RO,ROTA,MODEL,SERIAL,WWN,TRAN,FSTYPE,PTTYPE,PARTLABEL,LABEL,UUID,"
    "MOUNTPOINTS"
)


# Mount points that mean "this disk runs the system we are on": never a pool disk for the
# wizard, never a target for flash. /var/lib/anklume is the appliance's persistent partition.
SYSTEM_MOUNTS = frozenset({"/", "/usr", "/boot", "/efi", "/boot/efi", str(DEFAULT_STATE_DIR)})


class LsblkError(ValueError):
    """lsblk's output is not the JSON tree it prints."""


# One device as lsblk prints it: its columns (lowercase), and `children`.
Device = Mapping[str, Any]


def parse(text: str) -> list[Device]:
    """The top-level devices of `lsblk --json` output."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise LsblkError(f"lsblk printed no JSON ({e})") from None
    if not isinstance(doc, Mapping):
        raise LsblkError("lsblk's JSON is not an object")
    return list(doc.get("blockdevices") or ())


def walk(node: Device) -> Iterator[Device]:
    """A device, then everything under it (partitions, device-mapper targets...), depth first."""
    yield node
    for child in node.get("children") or ():
        yield from walk(child)


def walk_all(devices: list[Device]) -> Iterator[Device]:
    for top in devices:
        yield from walk(top)


def text(value: object) -> str | None:
    """A string column: None when lsblk has nothing (null or blank)."""
    s = str(value).strip() if value is not None else ""
    return s or None


def flag(value: object) -> bool:
    """A boolean column: lsblk 2.38 prints JSON booleans, older versions "0"/"1"."""
    return value is True or str(value) == "1"
