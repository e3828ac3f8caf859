"""`anklume update rollback` (issue #24): the plan on bootctl JSON shaped like systemd 257's
(one entry per UKI profile, `<file>@<profile>` ids, an entry only the boot loader reported),
the checks of the other version against real files (sbsign'd UKI, a veritysetup-formatted
slot), and the renames with their read-back. On the appliance: tests/vm/test_update.py."""

# ruff: noqa: F811  (pytest fixtures imported from test_update_fixtures, used as arguments)
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from test_update_fixtures import keyset, make_uki, other_keyset  # noqa: F401

from anklume.errors import PermanentError
from anklume.updates import bootctl, policy, rollback, state, status, verity_sig
from anklume.updates.errors import VersionRefused
from anklume.updates.rollback import RollbackRefused

ESP = "/efi/EFI/Linux"


def entry(name: str, profile: str, *, default=False, booted=False) -> dict:
    v = name.removeprefix("anklume_").split("+")[0].removesuffix(".efi")
    e = {"type": "type2", "source": "esp", "id": f"anklume_{v}.efi@{profile}", "version": v,
         "path": f"{ESP}/{name}", "title": "anklume", "isDefault": default,
         "isSelected": booted}
    if "+" in name:
        left, _, done = name.split("+")[1].removesuffix(".efi").partition("-")
        e["triesLeft"], e["triesDone"] = int(left), int(done or 0)
    return e


def listing(*entries: dict, reported: str | None = None) -> str:
    es = list(entries)
    if reported:  # what systemd-boot reported under its own id: no file, no version
        es.append({"type": "loader", "id": reported, "isReported": True, "isSelected": True,
                   "isDefault": False})
    es.append({"type": "loader", "id": "auto-reboot-to-firmware-setup",
               "title": "Reboot Into Firmware Interface", "isDefault": False})
    return json.dumps(es)


# 0.2.0 blessed and running, 0.1.0 the previous version: what the machine showed.
BLESSED = listing(entry("anklume_0.2.0.efi", "main", default=True),
                  entry("anklume_0.2.0.efi", "toram"),
                  entry("anklume_0.1.0.efi", "main"), entry("anklume_0.1.0.efi", "toram"),
                  reported="anklume_0.2.0.efi")


def test_entries_fold_into_one_uki_per_file_and_skip_what_has_no_file():
    us = rollback.ukis(bootctl.parse(BLESSED))
    assert [(u.version, u.path.name, u.tries_left, u.default) for u in us] == [
        ("0.2.0", "anklume_0.2.0.efi", None, True), ("0.1.0", "anklume_0.1.0.efi", None, False)]


def test_rollback_sets_the_running_version_aside_by_its_boot_counter():
    p = rollback.plan(bootctl.parse(BLESSED), "0.2.0", state.State())
    assert p.target.version == "0.1.0"
    assert p.renames == ((Path(f"{ESP}/anklume_0.2.0.efi"), Path(f"{ESP}/anklume_0.2.0+0.efi")),)


def test_rolling_back_again_returns_to_the_version_set_aside():
    es = bootctl.parse(listing(entry("anklume_0.2.0+0.efi", "main"),
                               entry("anklume_0.1.0.efi", "main", default=True, booted=True)))
    st = state.State(last_installed="0.2.0", set_aside={"0.2.0": "rolled back to 0.1.0"})
    p = rollback.plan(es, "0.1.0", st)
    assert p.target.version == "0.2.0"
    # The target gets its plain name first: at every moment one version keeps its tries.
    assert p.renames == (
        (Path(f"{ESP}/anklume_0.2.0+0.efi"), Path(f"{ESP}/anklume_0.2.0.efi")),
        (Path(f"{ESP}/anklume_0.1.0.efi"), Path(f"{ESP}/anklume_0.1.0+0.efi")))
    # Set aside is not a fall back: status says so and apply does not refuse it as failed.
    r = status.report("0.1.0", es, st)
    assert r.fell_back_from is None
    text = "\n".join(status.lines(r))
    assert "set aside by `anklume update rollback`" in text, text
    with pytest.raises(VersionRefused, match="installed in the other slot"):
        policy.check("0.2.0", None, "0.1.0", set_aside=set(st.set_aside))


@pytest.mark.parametrize("listing_json, running, st, why", [
    (listing(entry("anklume_0.1.0.efi", "main", default=True, booted=True)), "0.1.0",
     state.State(), "none is installed"),
    (listing(entry("anklume_0.2.0+0-3.efi", "main"), entry("anklume_0.1.0.efi", "main")),
     "0.1.0", state.State(), r"0.2.0: systemd-boot gave up on it"),
    (listing(entry("anklume_0.2.0+0-3.efi", "main"), entry("anklume_0.1.0.efi", "main")),
     "0.1.0", state.State(failed={"0.2.0": "x"}), r"0.2.0: it failed to boot here"),
    (listing(entry("anklume_0.2.0+3-0.efi", "main"), entry("anklume_0.1.0.efi", "main")),
     "0.1.0", state.State(), "not tried yet: it boots next by itself"),
    (listing(entry("anklume_0.2.0+2-1.efi", "main", booted=True),
             entry("anklume_0.1.0.efi", "main")), "0.2.0", state.State(), "is on trial"),
    (listing(entry("anklume_0.1.0.efi", "main")), "0.3.0", state.State(),
     "0.3.0 has no UKI on the ESP"),
])
def test_rollback_refuses_when_there_is_nothing_to_go_back_to(listing_json, running, st, why):
    with pytest.raises(RollbackRefused, match=why):
        rollback.plan(bootctl.parse(listing_json), running, st)


def _slot(tmp_path: Path, by_partuuid: Path) -> tuple[str, Path]:
    """A real dm-verity pair (veritysetup format) linked under the UUIDs its root hash gives."""
    data, hashes = tmp_path / "usr.raw", tmp_path / "usr-verity.raw"
    data.write_bytes(bytes(range(256)) * 4096)
    hashes.write_bytes(b"")
    out = subprocess.run(["veritysetup", "format", str(data), str(hashes)], check=True,
                         capture_output=True, text=True).stdout
    root = next(line.split()[-1] for line in out.splitlines() if line.startswith("Root hash"))
    by_partuuid.mkdir()
    for uuid, f in zip(verity_sig.partition_uuids(root), (data, hashes), strict=True):
        (by_partuuid / uuid).symlink_to(f)
    return root, data


def _target(tmp_path: Path, root: str, ks) -> rollback.Uki:
    uki = make_uki(tmp_path / "anklume_0.1.0.efi", f"usrhash={root} mount.usr=/dev/mapper/usr",
                   ks, profiles=[None, "anklume.toram=1"])
    return rollback.Uki(path=uki, version="0.1.0", tries_left=None, booted=False, default=False)


def test_the_other_version_is_checked_block_by_block_before_anything_changes(
        tmp_path, keyset):
    root, data = _slot(tmp_path, tmp_path / "by-partuuid")
    target = _target(tmp_path, root, keyset)
    rollback.check_target(target, keyset.db_cert, by_partuuid=tmp_path / "by-partuuid")
    # One byte of the slot changed: veritysetup finds it; nothing is renamed.
    with data.open("r+b") as f:
        f.seek(300_000)
        f.write(b"\xff")
    with pytest.raises(RollbackRefused, match=r"slot of 0.1.0 is damaged"):
        rollback.check_target(target, keyset.db_cert, by_partuuid=tmp_path / "by-partuuid")


def test_a_slot_that_is_gone_or_a_uki_signed_by_another_key_is_refused(
        tmp_path, keyset, other_keyset):
    root, _ = _slot(tmp_path, tmp_path / "by-partuuid")
    target = _target(tmp_path, root, keyset)
    with pytest.raises(RollbackRefused, match=r"slot of 0.1.0 is gone: no data partition"):
        rollback.check_target(target, keyset.db_cert, by_partuuid=tmp_path / "elsewhere")
    with pytest.raises(RollbackRefused, match=r"0.1.0 would not boot: .*Secure Boot signature"):
        rollback.check_target(target, other_keyset.db_cert,
                              by_partuuid=tmp_path / "by-partuuid")


def _esp(tmp_path: Path, *names: str) -> Path:
    esp = tmp_path / "esp"
    esp.mkdir()
    for n in names:
        (esp / n).write_bytes(b"MZ")
    return esp


def _read_back(esp: Path):
    """bootctl after the renames: systemd-boot's order, newest version that has tries first."""
    def read() -> list:
        files = sorted(esp.iterdir(), key=lambda p: ("+0" in p.name, [-int(x) for x in
                       p.name.removeprefix("anklume_").split("+")[0].removesuffix(".efi")
                       .split(".")]))
        return bootctl.parse(json.dumps([
            {"id": f.name, "version": f.name.removeprefix("anklume_").split("+")[0]
             .removesuffix(".efi"), "path": str(f), "isDefault": i == 0,
             **({"triesLeft": 0} if "+0" in f.name else {})} for i, f in enumerate(files)]))
    return read


def test_execute_renames_then_reads_back_the_next_boot(tmp_path):
    esp = _esp(tmp_path, "anklume_0.2.0.efi", "anklume_0.1.0.efi")
    read = _read_back(esp)
    p = rollback.plan(read(), "0.2.0", state.State())
    nxt = rollback.execute(p, read, entry_default_var=tmp_path / "none")
    assert nxt.version == "0.1.0"
    assert sorted(f.name for f in esp.iterdir()) == ["anklume_0.1.0.efi", "anklume_0.2.0+0.efi"]


def test_execute_undoes_the_renames_when_the_loader_would_boot_something_else(tmp_path):
    esp = _esp(tmp_path, "anklume_0.2.0.efi", "anklume_0.1.0.efi")
    read = _read_back(esp)
    p = rollback.plan(read(), "0.2.0", state.State())

    def stubborn() -> list:  # failure injection: a loader that still picks 0.2.0
        return [dataclasses.replace(e, is_default=True) for e in read() if e.version == "0.2.0"]
    with pytest.raises(PermanentError, match=r"would boot 0.2.0, not 0.1.0; the change was undone"):
        rollback.execute(p, stubborn, entry_default_var=tmp_path / "none")
    assert sorted(f.name for f in esp.iterdir()) == ["anklume_0.1.0.efi", "anklume_0.2.0.efi"]


def test_a_pinned_default_is_cleared_first(tmp_path):
    esp = _esp(tmp_path, "anklume_0.2.0.efi", "anklume_0.1.0.efi")
    read = _read_back(esp)
    pinned = tmp_path / "LoaderEntryDefault"
    pinned.write_bytes(b"\x07\0\0\0x")
    calls = []

    def runner(argv):
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")
    rollback.execute(rollback.plan(read(), "0.2.0", state.State()), read, runner=runner,
                     entry_default_var=pinned)
    assert calls == [["bootctl", "set-default", ""]]


def test_status_says_in_words_what_runs_and_what_boots_next():
    r = status.report("0.2.0", bootctl.parse(BLESSED), state.State())
    text = status.lines(r)
    assert text[:2] == ["running: 0.2.0, blessed", "next boot: 0.2.0"], text
    assert any("0.1.0" in t and "previous version (`anklume update rollback` boots it)" in t
               for t in text), text
    assert not any("firmware" in t.lower() or "@" in t for t in text), text
