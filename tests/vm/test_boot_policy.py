"""A boot never hangs, and a failed health gate is handled by what the boot is: on trial (a new
version, counted by systemd-boot) it restarts so the counter runs down; not on trial (nothing
to fall back to) it stays up, unblessed, and says so. docs/boot-policy.md.

The stopped boot (emergency in the initrd) is the corrupted-/usr test in test_boot.py; the
watchdog, panic= and the Troubleshoot entry are facts of the shared boot (below).
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from anklume.vm import disk, guest
from anklume.vm.boot import Boot, boot_and_check, restart_delay

pytestmark = pytest.mark.vm


def test_the_kernel_restarts_after_a_panic_and_the_watchdog_is_armed(main_boot: Boot) -> None:
    r = main_boot.report
    assert " panic=10 " in f" {r['cmdline']} ", r["cmdline"]
    # PID 1 arms the board's watchdog (QEMU q35: the ICH9 TCO timer, as on Intel boards).
    assert r["watchdog_usec"] == "1min", r["watchdog_usec"]
    assert r["watchdog_identity"], "no watchdog device in the guest"
    assert r["watchdog_state"] == "active", r["watchdog_state"]


def test_a_stopped_boot_restarts_unless_the_troubleshoot_entry_was_chosen(main_boot: Boot) -> None:
    r = main_boot.report
    wanted_by = set(r["stop_reboot_wanted_by"].split())
    assert {"emergency.target", "rescue.target"} <= wanted_by, wanted_by
    titles = r["boot_entries"].split(";")
    assert any("Troubleshoot" in t for t in titles), titles


def test_a_failed_health_gate_restarts_a_trial_boot_and_the_last_try_stays_up(
    artifacts, scratch: Path
) -> None:
    # A new version as an update installs it: its UKI named for boot counting, 2 tries left.
    image = disk.raw_copy(artifacts.raw, scratch / "trial.raw")
    esp = disk.Esp(image)
    name = artifacts.uki.name
    stem = name.removesuffix(".efi")
    esp.write(f"/EFI/Linux/{stem}+2.efi", artifacts.uki.read_bytes())
    esp.delete(f"/EFI/Linux/{name}")

    boot = boot_and_check(
        "trial-boot",
        image,
        script=guest.check_script(guest.TRIAL_FACTS, core=False),
        dropins={"anklume-firewall.service": guest.FIREWALL_FAILS,
                 "anklume-agent.service": guest.AGENT_IDLE},
        # 1 s: the restart is the point, not its countdown. The check still reports its 8
        # facts between the gate's verdict and the restart: its unit holds the restart until
        # it has (the second boot's report proves the first was not cut short).
        credentials=restart_delay(1),
    )
    r = boot.report
    paths = r.multi.get("trial.count_path", [])
    assert len(paths) == 2, f"expected two boots' reports, got {paths}"
    # Why the gate fails (#20): the isolation table could not be loaded, so neither Incus's
    # daemon nor its socket started (no instance can run unfiltered), and the gate says so.
    assert r.multi["trial.firewall"] == ["failed", "failed"], r.multi["trial.firewall"]
    for states in r.multi["trial.incus"]:
        assert "active" not in states.split(":"), r.multi["trial.incus"]
    for b64 in r.multi["trial.health_log_b64"]:
        gate = base64.b64decode(b64).decode(errors="replace")
        # At once, from systemd's view of Incus: not after waiting out its 60 s for an answer.
        assert "FAIL  incus: Incus will not start: anklume-firewall.service failed" in gate, \
            gate
        assert "FAIL  firewall" in gate, gate
    assert "Incus will not start" in boot.serial, boot.serial[-3000:]
    # The normal boot, neither Run from RAM nor Troubleshoot (systemd-boot 257 boots profile 1
    # of a counted UKI by default: image/uki-profiles/main.conf).
    for cmdline in r.multi["trial.cmdline"]:
        assert "anklume.keep_shell=1" not in cmdline, cmdline
        assert "anklume.toram=1" not in cmdline, cmdline
    # Boot 1: on trial (one more try after it), the gate fails, the boot restarts.
    assert paths[0].endswith(f"{stem}+1-1.efi"), paths
    assert r.multi["trial.health"][0] == "failed"
    assert r.multi["trial.action"] == ["restart", "stay"], r.multi["trial.action"]
    assert "it is on trial" in boot.serial, boot.serial[-3000:]
    # The countdown the anklume.restart_delay credential shortened (it can only shorten it).
    assert "Restarting in 1 s." in boot.serial, boot.serial[-3000:]
    assert boot.resets >= 1, f"resets {boot.resets}: the trial's restart"
    # Boot 2: the last try, and no other version on the ESP to fall back to: the gate fails
    # again and the system stays up, unblessed, and says why; the check then powers it off
    # (a restart would only loop on the same version).
    assert paths[1].endswith(f"{stem}+0-2.efi"), paths
    assert r.multi["trial.health"][1] == "failed"
    assert r.multi["trial.boot_complete"][1] != "active"
    assert "no other version" in boot.serial, boot.serial[-3000:]
    assert "power-off" in boot.stages
    assert f"{stem}+0-2.efi" in esp.ls("/EFI/Linux")
