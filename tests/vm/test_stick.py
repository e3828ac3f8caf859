"""The USB-stick path on the booted appliance: a disk written by `anklume flash`, booted as a
USB stick, reached over the network, the same machine after a reboot, and Run from RAM.

One machine, four boots of the same flashed disk (conftest): `main_boot` (first boot, virtio,
NIC), `second_boot` (usb-storage, NIC; steady state; at the end the stick is pulled out: the
control), `toram_boot` ("Run from RAM" entry; the stick is pulled out and the OS keeps working)
and `small_ram_boot` (the same entry with too little RAM: a normal boot that says why).
"""

from __future__ import annotations

import base64
import re

import pytest
from conftest import Stick

from anklume.vm.boot import Boot

pytestmark = pytest.mark.vm


def _b64(boot: Boot, key: str) -> str:
    return base64.b64decode(boot.report.get(key, "")).decode(errors="replace")


def _kv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


# --- flash, network, identity ------------------------------------------------------------------


def test_the_disk_is_written_by_anklume_flash(stick: Stick) -> None:
    out = stick.flash_output
    assert re.search(r"(?i)verified|sha-?256", out), out


def test_wired_nic_gets_an_address_by_dhcp(main_boot: Boot) -> None:
    """networkd's shipped .network file: QEMU's user network hands out 10.0.2.15 by DHCP."""
    r = main_boot.report
    assert re.search(r"=10\.0\.2\.15/24", r["net_addrs"]), r["net_addrs"]
    links = r.prefixed("networkd_link.")
    assert any(v.endswith("80-anklume-wired.network") for v in links.values()), links


def test_ssh_host_key_reaches_the_host_through_the_network(main_boot: Boot) -> None:
    """`ssh-keyscan` on the host, through QEMU's forward of a loopback port to the guest's
    port 22 over the NIC: the same key the guest reports for itself."""
    assert main_boot.host_keyscan, "no answer from the guest's sshd through the port forward"
    key = main_boot.host_key()
    assert key, main_boot.host_keyscan
    import hashlib

    fp = "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(key)).digest()).decode()
    assert fp.rstrip("=") == main_boot.report["ssh_host_ed25519"], (fp, main_boot.report)


def test_reboot_keeps_the_machine_identity(main_boot: Boot, second_boot: Boot) -> None:
    """Same disk, rebooted (as a USB stick this time): same machine-id, hostname and SSH host
    key, all from the persistent partition; the key seen through the network is the same."""
    a, b = main_boot.report, second_boot.report
    assert re.fullmatch(r"[0-9a-f]{32}", a["machine_id"]), a["machine_id"]
    assert b["machine_id"] == a["machine_id"]
    assert a["hostname"] == f"anklume-{a['machine_id'][:6]}", a["hostname"]
    assert b["hostname"] == a["hostname"]
    assert a["ssh_host_ed25519"] and b["ssh_host_ed25519"] == a["ssh_host_ed25519"]
    assert second_boot.host_key() and second_boot.host_key() == main_boot.host_key()


def test_flashed_disk_boots_as_a_usb_stick(second_boot: Boot) -> None:
    r = second_boot.report
    assert r["system_state"] == "running", r["system_state"]
    assert r["secureboot"] == "1"
    # /usr's verity device sits on the USB disk (sd*), and so does the persistent partition.
    assert r["esp_disk"].startswith("sd"), r["esp_disk"]
    assert r["persist_disk"] == r["esp_disk"], (r["persist_disk"], r["esp_disk"])
    assert r["impostor_seen"] == "no"


def test_second_boot_is_steady(second_boot: Boot) -> None:
    """A later boot of the same disk: every timer's job, run once, succeeds; no unit failed
    after that; the first-boot partitioning has nothing left to do; verity saw no corruption."""
    r = second_boot.report
    jobs = r.prefixed("timer_job.")
    assert jobs, "no active timer found: the settle window proves nothing"
    assert all(v == "success" for v in jobs.values()), jobs
    assert r["settled_jobs"] == "", f"still queued after 2 minutes: {r['settled_jobs']}"
    assert r["settled_failed_units"] == "", r["settled_failed_units"]
    assert r["failed_units"] == "", r["failed_units"]
    assert r["settled_verity_errors"] == "0"
    repart = _b64(second_boot, "repart_log_b64")
    assert not re.search(r"(?i)adding new partition|new partition", repart), repart


# --- pulling the stick out -----------------------------------------------------------------------


def test_a_config_volume_is_ignored_where_live_mode_was_provisioned(second_boot: Boot) -> None:
    """A machine provisioned to stay in live mode (the anklume.firstboot.skip credential): an
    ANKLUME-CFG stick plugged in, with answers that would make a pool on the blank data disk,
    makes none."""
    r = second_boot.report
    assert r["cfg_volume"].startswith("/dev/sd"), "the guest never saw the ANKLUME-CFG stick"
    assert r["cfg_record"] == "absent", "a pool was made from the volume"
    log = base64.b64decode(r["cfg_firstboot_b64"]).decode(errors="replace")
    if r["cfg_unit_ran"] == "yes":  # its condition saw the volume: it must say why it stopped
        assert "ANKLUME-CFG is ignored" in log, log


def test_without_toram_pulling_the_stick_breaks_the_os(second_boot: Boot) -> None:
    """The control for the toram test: the same workload after the same unplug fails when the
    OS runs from the stick (so the toram test can fail)."""
    r = second_boot.report
    assert second_boot.boot_unplug.startswith("ok"), second_boot.boot_unplug
    assert r["unplug_gone"] == "yes"
    files, errors = int(r["workload.files"]), int(r["workload.read_errors"])
    assert errors > 0 or files == 0, f"{files} files read without a single error: not a control"


def test_boot_menu_offers_run_from_ram(second_boot: Boot) -> None:
    r = second_boot.report
    assert r["toram_entry_id"].endswith("@toram"), r["toram_entry_id"]
    assert "Run from RAM" in r["toram_entry_title"], r["toram_entry_title"]
    assert r["oneshot"] == r["toram_entry_id"], (r["oneshot"], r["toram_entry_id"])


def test_toram_copies_usr_into_ram_with_verity_enforced(toram_boot: Boot) -> None:
    r = toram_boot.report
    status = _kv(_b64(toram_boot, "toram_status_b64"))
    assert status.get("state") == "ram", (status, _b64(toram_boot, "toram_log_b64"))
    assert "anklume.toram=1" in r["cmdline"]
    # /usr is still the verity device, now on loop devices backed by RAM, checked against the
    # same signed usrhash=.
    slaves = r["usr_slaves"].split(",")
    assert slaves and all(s.startswith("loop") for s in slaves), r["usr_slaves"]
    assert r["usr_dm_name"] == "usr"
    assert r.get("usr_verity.status") == "verified", r.prefixed("usr_verity.")
    assert r["failed_units"] == "", r["failed_units"]
    assert "copying the OS" in toram_boot.serial, "no progress on the console"


def test_toram_says_when_the_stick_can_be_removed(toram_boot: Boot) -> None:
    r = toram_boot.report
    assert r["toram_removable"] == "yes", r["toram_ready_unit"]
    assert "The USB stick can be removed now" in toram_boot.serial
    # The persistent partition's contents are in RAM; the partition itself is not mounted.
    persist = _kv(_b64(toram_boot, "persist_state_b64"))
    assert persist.get("state") == "ram", persist
    assert r["persist_disk"] == "", r["persist_disk"]


def test_toram_keeps_working_after_the_stick_is_pulled(toram_boot: Boot) -> None:
    r = toram_boot.report
    assert toram_boot.boot_unplug.startswith("ok"), toram_boot.boot_unplug
    assert r["unplug_gone"] == "yes"
    assert int(r["workload.files"]) == 3000, r["workload.files"]
    assert r["workload.read_errors"] == "0"
    assert r["workload.programs_ran"] == "8"
    assert r["workload.service"] == "active:inactive", r["workload.service"]
    assert "power-off" in toram_boot.stages, "the OS could not even shut down"


def test_toram_with_too_little_ram_boots_normally_and_says_why(small_ram_boot: Boot) -> None:
    r = small_ram_boot.report
    assert "anklume.toram=1" in r["cmdline"], "the Run from RAM entry was not the one booted"
    status = _kv(_b64(small_ram_boot, "toram_status_b64"))
    assert status.get("state") == "disk", status
    assert "not enough RAM" in status.get("reason", ""), status
    assert re.search(r"not running from RAM: not enough RAM", small_ram_boot.serial)
    slaves = r["usr_slaves"].split(",")
    assert slaves and not any(s.startswith("loop") for s in slaves), r["usr_slaves"]


def test_a_twin_stick_from_the_same_image_is_never_trusted(small_ram_boot: Boot) -> None:
    """Two disks carry the boot partition's UUID: the initrd cannot tell which one booted, so
    it uses neither persistent partition (state in RAM) and says why on the console."""
    status = _kv(_b64(small_ram_boot, "persist_status_b64"))
    assert status.get("state") == "none", status
    assert "2 disks carry the boot partition" in status.get("reason", ""), status
    assert re.search(r"anklume: 2 disks carry the boot partition \S+ \(sticks written from one "
                     r"image\?\)", small_ram_boot.serial), small_ram_boot.serial[-3000:]
