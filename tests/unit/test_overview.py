"""`anklume status`'s machine part (anklume/overview.py) from the files their owners write:
the initrd's toram and persist records, the unlock's pool status, the wizard's record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anklume import overview, secureboot


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run, state = tmp_path / "run", tmp_path / "state"
    (run / "toram").mkdir(parents=True)
    state.mkdir()
    os_release = tmp_path / "os-release"
    os_release.write_text('IMAGE_ID=anklume\nIMAGE_VERSION="1.2.3"\n')
    tpm = tmp_path / "tpm_version_major"
    tpm.write_text("2\n")
    monkeypatch.setattr(overview, "OS_RELEASE", os_release)
    monkeypatch.setattr(overview, "TPM_VERSION", tpm)
    monkeypatch.setattr(secureboot, "state", lambda efivars=None: secureboot.ON)

    def write(**files: str) -> overview.Machine:
        for name, text in files.items():
            path = {"toram": run / "toram/status", "removable": run / "toram/removable",
                    "persist": run / "persist", "pool": run / "pool-status",
                    "record": state / "firstboot.json"}[name]
            path.write_text(text)
        return overview.collect(run, state)
    return write


def test_live_mode_from_the_stick(machine) -> None:
    m = machine(persist="state=mounted\ndevice=/dev/sda4\nreason=\n")
    assert overview.lines(m) == [
        "version:     1.2.3", "boot:        from the stick", "pool:        none: live mode "
        "(state in RAM)", "secure boot: on", "tpm:         2.0"]
    assert overview.warnings(m) == ["live mode: no encrypted data pool yet, and nothing kept "
                                    "on this stick is protected"]


def test_from_ram_with_an_unlocked_pool(machine) -> None:
    m = machine(toram="state=ram\nsource=/dev/sda3\n", removable="", record="{}",
                pool="state=unlocked\nbackend=zfs\npool=anklume\ndisk=/dev/disk/by-id/x\n")
    text = "\n".join(overview.lines(m))
    assert "boot:        from RAM, the stick can be removed" in text
    assert "pool:        zfs pool anklume on /dev/disk/by-id/x, unlocked" in text
    assert overview.warnings(m) == []
    d = overview.as_json(m)
    assert d["schema"] == overview.SCHEMA and json.dumps(d)
    assert d["machine"]["boot_from"] == "ram" and d["machine"]["stick_removable"] is True


def test_what_needs_attention_is_said(machine) -> None:
    m = machine(toram="state=disk\nreason=not enough RAM (need 300 MiB)\n", record="{}",
                pool="state=degraded\nreason=3 wrong passphrases\n",
                persist="state=none\ndevice=-\nreason=2 disks carry the boot partition x\n")
    assert "boot:        from the stick (not enough RAM (need 300 MiB))" in overview.lines(m)
    assert "pool:        DEGRADED: 3 wrong passphrases" in overview.lines(m)
    w = overview.warnings(m)
    assert any(x.startswith("the data pool is not unlocked at this boot (3 wrong") for x in w), w
    assert any("persistent partition is not used: 2 disks carry" in x for x in w), w
