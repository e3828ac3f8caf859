"""Tests of the VM library (anklume.vm) itself: fast ones without QEMU, and one firmware-only
boot."""

from __future__ import annotations

import base64
import re
import struct
import subprocess
from pathlib import Path

import pytest

from anklume.vm import disk, firmware, guest, qemu
from anklume.vm.boot import log_dir_for


def _pe(with_signature: bool) -> bytes:
    """A minimal PE32+ header with an optional certificate table at the end of the file."""
    pe = bytearray(0x200)
    pe[:2] = b"MZ"
    struct.pack_into("<I", pe, 0x3C, 0x80)
    pe[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<H", pe, 0x80 + 24, 0x20B)
    if with_signature:
        cert = b"\x10\x00\x00\x00\x00\x02\x02\x00" + b"SIGNATURE"
        struct.pack_into("<II", pe, 0x80 + 24 + 112 + 32, len(pe), len(cert))
        pe += cert
    return bytes(pe)


def test_strip_signature_removes_the_certificate_table() -> None:
    signed = _pe(True)
    assert disk.is_signed(signed)
    unsigned = disk.strip_signature(signed)
    assert not disk.is_signed(unsigned)
    assert b"SIGNATURE" not in unsigned
    assert unsigned == _pe(False)


def test_report_parsing() -> None:
    text = (
        "noise\nANKLUME-TEST secureboot=1\nANKLUME-TEST failed_units=\n"
        "ANKLUME-TEST usr_verity.root_hash=ab cd\nANKLUME-TEST-RESULT fail secureboot x\n"
    )
    r = guest.parse_report(text)
    assert r["secureboot"] == "1"
    assert r["failed_units"] == ""
    assert r.prefixed("usr_verity.") == {"root_hash": "ab cd"}
    assert r.result == "fail" and r.reasons == ["secureboot", "x"]
    with pytest.raises(KeyError, match="did not report"):
        r["missing"]


def test_credentials_carry_unit_dropin_and_script() -> None:
    creds = {}
    for value in guest.smbios_credentials():
        assert "," not in value.removeprefix("type=11,"), "a comma would split QEMU's option"
        m = re.fullmatch(r"type=11,value=io\.systemd\.credential\.binary:([^=]+)=(.+)", value)
        assert m, value
        creds[m.group(1)] = base64.b64decode(m.group(2)).decode()
    unit = creds[f"systemd.extra-unit.{guest.UNIT}"]
    assert "ConditionPathExists=!/etc/initrd-release" in unit
    assert f"ImportCredential={guest.SCRIPT_CREDENTIAL}" in unit
    assert f"Wants={guest.UNIT}" in creds["systemd.unit-dropin.multi-user.target"]
    script = creds[guest.SCRIPT_CREDENTIAL]
    assert qemu.TEST_PORT in script and "systemctl poweroff" in script


def test_check_script_is_valid_sh(tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text(guest.check_script())
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_gpt_parsing_of_a_sparse_image(tmp_path: Path) -> None:
    """Writes a one-partition GPT by hand (no sfdisk on the host) and reads it back."""
    img = tmp_path / "gpt.raw"
    sector = 512
    with img.open("wb") as f:
        f.truncate(8 * 1024 * 1024)
        hdr = bytearray(92)
        hdr[:8] = b"EFI PART"
        struct.pack_into("<QII", hdr, 72, 2, 128, 128)
        f.seek(sector)
        f.write(hdr)
        entry = bytearray(128)
        entry[:16] = disk.USR.bytes_le
        entry[16:32] = disk.ESP.bytes_le
        struct.pack_into("<QQ", entry, 32, 2048, 4095)
        entry[56 : 56 + 12] = "usr_A".encode("utf-16-le") + b"\0\0"
        f.seek(2 * sector)
        f.write(entry)
    (p,) = disk.partitions(img)
    assert (p.type, p.uuid, p.label) == (disk.USR, disk.ESP, "usr_A")
    assert (p.offset, p.size) == (2048 * sector, 2048 * sector)


@pytest.mark.vm
def test_harness_boots_firmware_and_cleans_up(qemu_host: str, tmp_path: Path) -> None:
    """OVMF with Secure Boot settings reaches its boot manager; QMP answers; stop() cleans up.
    Proves the harness and the host's QEMU before any image is involved."""
    blank = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "64M"], check=True)
    spec = qemu.VMSpec(name="firmware-smoke", disk=blank, log_dir=log_dir_for("firmware-smoke"))
    with qemu.VM(spec) as vm:
        vm.wait_for(r"BdsDxe", timeout=120)
        assert vm.qmp is not None
        assert vm.qmp.execute("query-status")["status"] == "running"
        workdir = vm.workdir
        assert workdir is not None and (workdir / "qmp.sock").exists()
    assert not vm.running()
    assert not workdir.exists()
    assert (vm.log_dir / "serial.log").stat().st_size > 0


@pytest.mark.vm
def test_harness_reports_a_qemu_that_cannot_start(qemu_host: str, tmp_path: Path) -> None:
    """A usage error surfaces at once with QEMU's own message, and is not retried."""
    spec = qemu.VMSpec(
        name="bad-args",
        disk=tmp_path / "missing.qcow2",
        log_dir=log_dir_for("bad-args"),
    )
    calls = []
    with pytest.raises(qemu.VMError, match=r"missing\.qcow2") as e:
        qemu.run_vm(spec, calls.append)
    assert not isinstance(e.value, qemu.EmulatorCrashed)
    assert calls == []


def test_logwatch_strips_escapes_and_moves_past_matches(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"\x1b[2J\x1b[01;01HBdsDxe: loading\r\nlogin: \x1b[0;32mOK\x1b[0m\n")
    w = qemu.LogWatch(log)
    m = w.search(re.compile(r"BdsDxe: loading\nlogin: OK"))
    assert m
    w.cursor = m.end()
    assert w.search(re.compile("BdsDxe")) is None  # only newer output counts after a match
    with log.open("ab") as f:
        f.write(b"BdsDxe again\n")
    assert w.search(re.compile("BdsDxe again"))


def test_a_host_without_qemu_ovmf_or_swtpm_is_told_which_package_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(qemu, "QEMU", str(tmp_path / "qemu-system-x86_64"))
    monkeypatch.setattr(qemu, "SWTPM", str(tmp_path / "swtpm"))
    monkeypatch.setattr(firmware, "OVMF_CODE", tmp_path / "OVMF_CODE_4M.secboot.fd")
    monkeypatch.setattr(firmware, "OVMF_VARS", tmp_path / "OVMF_VARS_4M.fd")
    problems = qemu.host_problems(tpm=True)
    assert [p.split(" is missing (install ")[1].split(":")[0] for p in problems] == \
        ["qemu-system-x86", "ovmf", "ovmf", "swtpm"], problems
    assert all(str(tmp_path) in p for p in problems), problems
    assert len(qemu.host_problems()) == 3  # no TPM wanted: swtpm is not a problem
