"""Which /usr slot runs: the partition under /usr's verity device among the disk's usr ones."""

from __future__ import annotations

import json
from pathlib import Path

from anklume.updates import bootctl, slot, state, status

USR = slot.USR_TYPE
VERITY = "77ff5f63-e7b6-4633-acf4-1565b864c0e6"
# `lsblk -J -o NAME,PARTTYPE /dev/vda` of an appliance after its first boot (A/B made).
LSBLK = json.dumps({"blockdevices": [{"name": "vda", "parttype": None, "children": [
    {"name": "vda1", "parttype": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"},
    {"name": "vda2", "parttype": USR}, {"name": "vda3", "parttype": VERITY},
    {"name": "vda4", "parttype": "e7bb33fb-06cf-4e81-8273-e543b413e2e2"},
    {"name": "vda5", "parttype": USR.upper()}, {"name": "vda6", "parttype": VERITY},
]}]})


def test_slot_is_the_rank_among_usr_partitions():
    assert slot.from_lsblk(LSBLK, "vda2") == slot.Slot("A", "vda2")
    assert slot.from_lsblk(LSBLK, "vda5") == slot.Slot("B", "vda5")
    assert slot.from_lsblk(LSBLK, "vda3") is None  # the hash partition is no slot


def test_usr_slaves_follow_the_mounted_device(tmp_path: Path):
    (tmp_path / "block/dm-0/slaves/vda5").mkdir(parents=True)
    (tmp_path / "block/dm-0/slaves/vda6").mkdir(parents=True)
    mounts = tmp_path / "mounts"
    dm = tmp_path / "dm-0"
    dm.touch()
    mounts.write_text(f"tmpfs / tmpfs rw 0 0\n{dm} /usr squashfs ro 0 0\n")
    assert slot.usr_slaves(tmp_path / "block", mounts) == ["vda5", "vda6"]


def test_status_names_the_slot():
    r = status.report("0.2.0", bootctl.parse("[]"), state.State(), slot.Slot("B", "vda5"))
    assert status.lines(r)[0] == "running: 0.2.0 (slot B, vda5)"
    r = status.report("0.2.0", [], state.State(), slot.Slot("RAM", "loop0,loop1"))
    assert status.lines(r)[0] == "running: 0.2.0 (from RAM)"
    assert status.lines(status.report("0.2.0", [], state.State()))[0] == "running: 0.2.0"
