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
    # The readers that ask the system (bootctl, zpool, nft, /proc, /sys): recorded answers.
    monkeypatch.setattr(overview, "read_update", lambda: {
        "slot": "A", "state": "running, blessed", "other": [], "pending": [],
        "fell_back_from": None, "failed": []})
    monkeypatch.setattr(overview, "read_pool_space", lambda pool: (
        {"health": "ONLINE", "free": 20 * 1024**3, "size": 32 * 1024**3}
        if pool.get("state") == "unlocked" else {}))
    monkeypatch.setattr(overview, "read_memory_encryption", lambda: {
        "supported": [], "active": False, "advice": "not supported by this CPU"})
    monkeypatch.setattr(overview, "read_gpus", lambda: [])
    monkeypatch.setattr(overview, "read_isolation", lambda: "loaded")

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
        "version:     1.2.3, slot A, blessed", "other slot:  empty (no other version installed)",
        "boot:        from the stick", "pool:        none: live mode (state in RAM)",
        "secure boot: on", "tpm:         2.0", "memory encryption: not offered by this CPU",
        "gpus:        none", "isolation:   the anklume table is loaded"]
    assert overview.warnings(m) == ["live mode: no encrypted data pool yet, and nothing kept "
                                    "on this stick is protected"]


def test_from_ram_with_an_unlocked_pool(machine) -> None:
    m = machine(toram="state=ram\nsource=/dev/sda3\n", removable="", record="{}",
                pool="state=unlocked\nbackend=zfs\npool=anklume\ndisk=/dev/disk/by-id/x\n")
    text = "\n".join(overview.lines(m))
    assert "boot:        from RAM, the stick can be removed" in text
    assert ("pool:        zfs pool anklume on /dev/disk/by-id/x, unlocked, ONLINE, 20.0 GiB "
            "free of 32.0 GiB") in text
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


def test_the_update_state_gpus_and_memory_encryption(machine, monkeypatch) -> None:
    """What `anklume update status` knows, said once more in the overview; a fallback, a trial
    and a missing isolation table are warnings."""
    monkeypatch.setattr(overview, "read_update", lambda: {
        "slot": "B", "state": "running, on trial (1 tries left after this one)",
        "other": [{"version": "1.2.2", "state": "the previous version (`anklume update "
                   "rollback` boots it)"}], "pending": [], "fell_back_from": "1.2.4",
        "failed": ["1.2.4"]})
    monkeypatch.setattr(overview, "read_gpus", lambda: [
        {"vendor": "NVIDIA", "device": "10de:2331", "driver": "nvidia", "vram": 80 * 1024**3}])
    monkeypatch.setattr(overview, "read_memory_encryption", lambda: {
        "supported": ["SME"], "active": False, "advice": "supported: boot with mem_encrypt=on"})
    monkeypatch.setattr(overview, "read_isolation", lambda: "none")
    m = machine(persist="state=mounted\n")
    text = overview.lines(m)
    assert text[0] == "version:     1.2.3, slot B, on trial (1 tries left after this one)"
    assert text[1] == ("other slot:  1.2.2, the previous version (`anklume update rollback` "
                       "boots it)")
    assert "gpus:        NVIDIA 10de:2331 (80.0 GiB)" in text
    assert "memory encryption: SME available, not active" in text
    assert "isolation:   NO TABLE LOADED" in text
    w = overview.warnings(m)
    assert any(x.startswith("the last boot fell back from 1.2.4 to 1.2.3") for x in w), w
    assert "1.2.3 is on trial: it counts as good once the health gate passes" in w
    assert "no isolation table is loaded: the domains are not separated" in w
    d = overview.as_json(m)["machine"]
    assert d["update"]["fell_back_from"] == "1.2.4" and d["gpus"][0]["vram"] == 80 * 1024**3


def test_a_development_host_shows_only_what_applies(machine, monkeypatch) -> None:
    monkeypatch.setattr(overview, "OS_RELEASE", Path("/nonexistent/os-release"))
    m = machine()
    assert overview.lines(m) == ["machine:     a development host (secure boot: on)"]
    assert m.update == {} and m.isolation is None
