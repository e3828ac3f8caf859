"""apply's hand-over to systemd-sysupdate, status, rollback and the failed-version memory,
with a fake runner in place of the commands (they need a real appliance disk)."""

# ruff: noqa: F811  (pytest fixtures imported from test_update_fixtures, used as arguments)
from __future__ import annotations

import configparser
import json
import subprocess
from pathlib import Path

import pytest
from test_update_fixtures import keyset, make_build  # noqa: F401

from anklume.errors import CommandError, PermanentError
from anklume.updates import apply, bootctl, source_usb, state, status, sysupdate
from anklume.updates.anchors import Anchors
from anklume.updates.errors import ApplyRefused, SourceUnavailable, VersionRefused
from anklume.updates.policy import fallback_from
from anklume.updates.publish import publish
from anklume.updates.slot import Slot
from anklume.updates.source_local import LocalSource

# The shape of `bootctl list --json=short` (fields as systemd 257's bootctl writes them):
# 0.2.0 was installed with 3 tries, failed them all (+0-3), and systemd-boot booted 0.1.0.
BOOTCTL_FELL_BACK = json.dumps([
    {"type": "type2", "source": "esp", "id": "anklume_0.2.0.efi", "version": "0.2.0",
     "path": "/efi/EFI/Linux/anklume_0.2.0+0-3.efi", "title": "anklume", "isReported": True,
     "triesLeft": 0, "triesDone": 3, "isDefault": False, "isSelected": False},
    {"type": "type2", "source": "esp", "id": "anklume_0.1.0.efi", "version": "0.1.0",
     "path": "/efi/EFI/Linux/anklume_0.1.0.efi", "title": "anklume", "isReported": True,
     "isDefault": True, "isSelected": True},
])
BOOTCTL_PENDING = json.dumps([
    {"id": "anklume_0.2.0.efi", "version": "0.2.0", "triesLeft": 3, "triesDone": 0,
     "path": "/efi/EFI/Linux/anklume_0.2.0+3-0.efi", "isDefault": True, "isSelected": False},
    {"id": "anklume_0.1.0.efi", "version": "0.1.0", "path": "/efi/EFI/Linux/anklume_0.1.0.efi",
     "isDefault": False, "isSelected": True},
    {"id": "auto-reboot-to-firmware-setup", "isDefault": False, "isSelected": False},
])


class FakeRunner:
    def __init__(self, outputs: dict[str, tuple[int, str]] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.outputs = outputs or {}

    def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        rc, out = next((v for k, v in self.outputs.items() if k in " ".join(argv)), (0, ""))
        return subprocess.CompletedProcess(argv, rc, out, "boom" if rc else "")


def test_shipped_transfers_are_ordered_with_the_uki_last_and_keys_as_documented():
    files = sorted(sysupdate.SHIPPED.glob("*.transfer"))
    assert [f.name for f in files] == ["10-usr.transfer", "20-usr-verity.transfer",
                                       "30-usr-verity-sig.transfer", "90-uki.transfer"]
    want = {
        "10-usr.transfer": ("anklume_@v.usr-x86-64.@u.raw", "partition", "anklume_@v", "usr"),
        "20-usr-verity.transfer": ("anklume_@v.usr-x86-64-verity.@u.raw", "partition",
                                   "anklume_@v_verity", "usr-verity"),
        "30-usr-verity-sig.transfer": ("anklume_@v.usr-x86-64-verity-sig.@u.raw", "partition",
                                       "anklume_@v_verity_sig", "usr-verity-sig"),
    }
    for f in files:
        c = configparser.ConfigParser(interpolation=None)
        c.optionxform = str
        c.read(f)
        assert c["Transfer"]["ProtectVersion"] == "%A"
        assert c["Source"]["Type"] == "regular-file"
        if f.name in want:
            src, ttype, label, ptype = want[f.name]
            assert c["Source"]["MatchPattern"] == src
            assert (c["Target"]["Type"], c["Target"]["MatchPattern"]) == (ttype, label)
            assert c["Target"]["MatchPartitionType"] == ptype
            assert c["Target"]["ReadOnly"] == "1"
        else:
            t = c["Target"]
            assert (t["Path"], t["PathRelativeTo"], t["TriesLeft"], t["TriesDone"],
                    t["InstancesMax"]) == ("/EFI/Linux", "boot", "3", "0", "2")
            assert t["MatchPattern"].split() == [
                "anklume_@v+@l-@d.efi", "\\", "anklume_@v+@l.efi", "\\", "anklume_@v.efi"]


def test_render_points_only_the_source_path_at_the_staging_dir(tmp_path):
    defs = sysupdate.write_definitions(tmp_path / "stage dir", tmp_path / "defs")
    assert len(defs) == 4
    for d in defs:
        text = d.read_text()
        assert f"Path={tmp_path / 'stage dir'}" in text
        assert "/run/anklume/update/staging" not in text
    assert "Path=/EFI/Linux" in (tmp_path / "defs" / "90-uki.transfer").read_text()
    assert "Path=auto" in (tmp_path / "defs" / "10-usr.transfer").read_text()


@pytest.fixture
def published(tmp_path, keyset):
    make_build(tmp_path / "build", "0.2.0", keyset)
    publish(tmp_path / "build", tmp_path / "out")
    return tmp_path / "out", Anchors(update_cert=keyset.verity_cert, db_cert=keyset.db_cert)


def run_apply(tmp_path, out, anchors, *, yes=True, confirm=lambda q: True, reboot=False,
              install=None, running="0.1.0", slot=None):
    echoed: list[str] = []
    install = install or FakeRunner()
    v = apply.apply(
        LocalSource(out), staging=tmp_path / "staging", definitions=tmp_path / "defs",
        anchors=anchors, running=running, allow_downgrade=False, yes=yes, reboot=reboot,
        confirm=confirm, echo=echoed.append, state_path=tmp_path / "state.json",
        install_runner=install, running_slot=slot)
    return v, echoed, install


def test_apply_verifies_then_summarises_then_hands_over_once(published, tmp_path):
    out, anchors = published
    v, echoed, install = run_apply(tmp_path, out, anchors, reboot=True)
    assert install.calls == [[sysupdate.SYSUPDATE, f"--definitions={tmp_path / 'defs'}",
                              "--reboot", "update", "0.2.0"]]
    assert echoed[0].startswith("update 0.1.0 -> 0.2.0 from ")
    assert any("usr-x86-64-verity-sig" in line for line in echoed)
    assert state.load(tmp_path / "state.json").last_installed == "0.2.0"
    assert v.dir == tmp_path / "staging"


def test_apply_not_confirmed_writes_nothing(published, tmp_path):
    out, anchors = published
    with pytest.raises(ApplyRefused, match="nothing was written"):
        run_apply(tmp_path, out, anchors, yes=False, confirm=lambda q: False)
    assert not (tmp_path / "defs").exists()
    assert not (tmp_path / "state.json").exists()


def test_apply_refused_version_never_reaches_sysupdate(published, tmp_path):
    out, anchors = published
    install = FakeRunner()
    with pytest.raises(VersionRefused):
        run_apply(tmp_path, out, anchors, running="0.3.0", install=install)
    assert install.calls == []


def test_apply_from_a_boot_in_ram_is_refused_before_anything(published, tmp_path):
    out, anchors = published
    install = FakeRunner()
    with pytest.raises(ApplyRefused, match="runs from RAM"):
        run_apply(tmp_path, out, anchors, install=install, slot=Slot("RAM", "loop0,loop1"))
    assert install.calls == [] and not (tmp_path / "staging").exists()
    run_apply(tmp_path, out, anchors, install=install, slot=Slot("A", "vda2"))
    assert len(install.calls) == 1


def test_apply_reports_a_failing_sysupdate(published, tmp_path):
    out, anchors = published
    with pytest.raises(CommandError, match="systemd-sysupdate"):
        run_apply(tmp_path, out, anchors, install=FakeRunner({"update": (1, "")}))


def test_a_failed_version_is_recorded_from_boot_entries_and_not_offered(published, tmp_path):
    out, anchors = published
    run_apply(tmp_path, out, anchors)
    st = state.load(tmp_path / "state.json")
    r = status.report("0.1.0", bootctl.parse(BOOTCTL_FELL_BACK), st)
    assert r.fell_back_from == "0.2.0"
    assert status.record_fallback(st, r) and not status.record_fallback(st, r)
    state.save(st, tmp_path / "state.json")
    again = state.load(tmp_path / "state.json")
    assert "0.2.0" in again.failed_versions
    assert any("fell back from 0.2.0" in line for line in status.lines(r))
    with pytest.raises(VersionRefused, match="failed to boot"):
        run_apply(tmp_path, out, anchors)


def test_deliberate_rollback_is_not_a_failure():
    entries = bootctl.parse(BOOTCTL_PENDING)
    assert fallback_from("0.1.0", "0.2.0", entries) is None
    assert fallback_from("0.2.0", "0.2.0", bootctl.parse(BOOTCTL_FELL_BACK)) is None
    assert fallback_from("0.1.0", None, bootctl.parse(BOOTCTL_FELL_BACK)) is None


def test_status_lists_pending_entry_and_tries():
    r = status.report("0.1.0", bootctl.parse(BOOTCTL_PENDING), state.State())
    assert [e.version for e in r.pending] == ["0.2.0"]
    text = "\n".join(status.lines(r))
    assert "next boot: 0.2.0" in text
    assert "0.2.0        other slot  installed, boots next on trial (3 tries)" in text, text
    assert "0.1.0        this slot   running, blessed" in text, text
    assert "pending: 0.2.0" in text


def test_running_version_from_os_release(tmp_path):
    p = tmp_path / "os-release"
    p.write_text('ID=debian\nIMAGE_ID=anklume\nIMAGE_VERSION="0.1.0"\n')
    assert status.running_version(p) == "0.1.0"
    p.write_text("ID=debian\n")
    with pytest.raises(PermanentError, match="no IMAGE_VERSION"):
        status.running_version(p)


def test_state_file_roundtrip_and_corruption(tmp_path):
    p = tmp_path / "s.json"
    assert state.load(p) == state.State()
    state.save(state.State(last_installed="0.2.0", failed={"0.1.5": "x"}), p)
    assert state.load(p) == state.State(last_installed="0.2.0", failed={"0.1.5": "x"})
    assert json.loads(p.read_text())["schema"] == state.SCHEMA
    p.write_text("{not json")
    with pytest.raises(PermanentError, match="unreadable update state"):
        state.load(p)


def test_state_file_without_schema_is_schema_1_and_a_newer_one_is_refused(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"last_installed": "0.1.0", "failed": {"0.1.1": "x"}, "set_aside": {}}\n')
    assert state.load(p) == state.State(last_installed="0.1.0", failed={"0.1.1": "x"})
    p.write_text('{"schema": 2, "last_installed": "0.1.0"}\n')
    with pytest.raises(PermanentError, match="schema 2, this anklume reads 1"):
        state.load(p)
    assert json.loads(p.read_text())["schema"] == 2  # left as it was


def test_state_lives_under_the_persistent_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ANKLUME_STATE_DIR", str(tmp_path))
    assert state.path() == tmp_path / "update-state.json"


def test_usb_stick_found_by_label_uses_its_mountpoint(tmp_path):
    by_label = tmp_path / "by-label"
    by_label.mkdir()
    dev = tmp_path / "sdb1"
    dev.write_text("")
    (by_label / "ANKLUME-UPD").symlink_to(dev)
    lsblk = json.dumps({"blockdevices": [{"path": "/dev/sdb", "mountpoints": [None],
                        "children": [{"path": str(dev), "mountpoints": ["/media/stick"]}]}]})
    run = FakeRunner({"lsblk": (0, lsblk)})
    assert source_usb.locate(tmp_path / "mnt", by_label=by_label, runner=run) == \
        Path("/media/stick")
    assert run.calls == [["lsblk", "--json", "-o", "PATH,MOUNTPOINTS", str(dev)]]


def test_usb_stick_not_mounted_is_mounted_read_only(tmp_path):
    by_label = tmp_path / "by-label"
    by_label.mkdir()
    dev = tmp_path / "sdb1"
    dev.write_text("")
    (by_label / "ANKLUME-UPD").symlink_to(dev)
    lsblk = json.dumps({"blockdevices": [{"path": str(dev), "mountpoints": [None]}]})
    run = FakeRunner({"lsblk": (0, lsblk)})
    assert source_usb.locate(tmp_path / "mnt", by_label=by_label, runner=run) == tmp_path / "mnt"
    assert run.calls[-1] == ["mount", "-o", "ro,nosuid,nodev,noexec", str(dev),
                             str(tmp_path / "mnt")]


def test_no_usb_stick_is_a_clear_error(tmp_path):
    with pytest.raises(SourceUnavailable, match="no filesystem labelled ANKLUME-UPD"):
        source_usb.locate(tmp_path / "mnt", by_label=tmp_path)
