"""Fixtures for the boot tests: a current image, the shared stick and its boots.

These tests claim features of the image (verity, Secure Boot, ...): when the host cannot run
QEMU they fail with the reason, they never skip. Missing KVM is not a failure (TCG is used).
The machinery (QEMU, firmware, disks, guest checks, builds) is the VM library, anklume.vm.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from anklume.firstboot.answers import VOLUME_FILE, VOLUME_LABEL
from anklume.image.artifacts import Artifacts
from anklume.vm import builds, disk, firmware, guest, media, qemu
from anklume.vm.boot import Boot, FlashFailed, boot_and_check, flash_to_stick, live_root_login
from anklume.vm.pool import ROOT_PASSWORD, answers, password_hash


@pytest.fixture(scope="session")
def qemu_host() -> str:
    """The accelerator to use; fails (does not skip) when QEMU or OVMF is missing."""
    problems = qemu.host_problems()
    if problems:
        pytest.fail(
            "this host cannot run the boot tests:\n  "
            + "\n  ".join(problems)
            + "\nThese tests check claimed image features, so they fail instead of skipping.",
            pytrace=False,
        )
    return qemu.detect_accel()


@pytest.fixture(scope="session")
def artifacts(qemu_host: str) -> Artifacts:
    """The built image, brought up to date with `anklume build` once per run (all workers
    share it: vm.builds). ANKLUME_VM_NO_BUILD=1 uses what is in build/ as it is."""
    from anklume.image import artifacts as art

    try:
        return art.find(builds.image())
    except (builds.BuildFailed, art.ArtifactsNotFound) as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A unique directory for disk copies, removed after the test (raw copies are large)."""
    d = Path(tempfile.mkdtemp(prefix="anklume-vmtest-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class Stick:
    path: Path
    flash_output: str


@pytest.fixture(scope="session")
def stick(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stick]:
    """The disk of the shared boots (main, second, toram, small-RAM: the same machine, rebooted),
    written by `anklume flash` like a user's USB stick."""
    work = tmp_path_factory.mktemp("stick")
    path = work / "stick.raw"
    try:
        out = flash_to_stick(artifacts.raw, path)
    except FlashFailed as e:
        pytest.fail(str(e), pytrace=False)
    yield Stick(path, out)
    path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def main_boot(stick: Stick) -> Boot:
    """The one boot that most checks share (boots are the expensive part under TCG): fresh
    firmware variables (setup mode), so it also goes through Secure Boot key enrolment and its
    reboot: the one boot that proves systemd-boot's enrolment (all others start enrolled). The
    agent deploys the embedded default infra; at the end the check writes a broken infra.yml
    onto the persistent partition (the path unit applies it at once). Meanwhile a person at
    the serial console logs in as root: live mode asks them to choose a session password."""
    return boot_and_check("main-boot", stick.path, ssh=True, vars_template=firmware.OVMF_VARS,
                          console=live_root_login(),
                          script=guest.check_script(guest.AGENT_FACTS + guest.PLAN_FACTS
                                                    + guest.CPU_FACTS + guest.ZFS_FACTS
                                                    + guest.EDIT_INFRA))


@pytest.fixture(scope="session")
def second_boot(main_boot: Boot, stick: Stick) -> Boot:
    """The same disk booted again, now as a USB stick (usb-storage), keys already enrolled: the
    persistent partition is reused and holds the broken infra.yml the main boot left there.
    Steady state: every timer's job runs once, then no unit may have failed. At the end the
    next boot is set to "Run from RAM", and the stick is pulled out from under the running
    system: the control for the toram boot (the same reads must fail here). A second USB
    stick is plugged in, an ANKLUME-CFG volume whose answers would make a pool on the blank
    data disk: this machine is provisioned to stay in live mode, so it must make none. Its ESP
    carries a planted credential (an SSH key for root): refused."""
    cfg = media.fat_volume({VOLUME_FILE: answers("zfs", password_hash(ROOT_PASSWORD))},
                           stick.path.with_name("cfg.img"), VOLUME_LABEL)
    # Someone with the stick put an SSH key for root on its ESP, as a credential: refused.
    media.plant_esp_credential(stick.path, "ssh.authorized_keys.root",
                               "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA planted-on-the-esp\n")
    return boot_and_check(
        "second-boot", stick.path, vars_template=main_boot.vars_after, boot_bus="usb", ssh=True,
        unplug_boot_disk=True, power_off=False, extra_args=media.usb_stick_args(cfg),
        script=guest.check_script(guest.AGENT_FACTS + guest.LIVE_LOCK_FACTS + guest.STEADY_FACTS
                                  + guest.ONESHOT_TORAM + guest.UNPLUG_WORKLOAD),
    )  # fmt: skip


@pytest.fixture(scope="session")
def toram_boot(second_boot: Boot, stick: Stick) -> Boot:
    """The same disk, "Run from RAM" entry (chosen by the previous boot): /usr is copied into
    RAM with verity enforced, the persistent state too, the console says when the stick can go;
    then the boot disk is pulled out and the same workload as the control runs."""
    return boot_and_check(
        "toram-boot", stick.path, vars_template=second_boot.vars_after, unplug_boot_disk=True,
        script=guest.check_script(guest.TORAM_FACTS + guest.TORAM_WAIT_REMOVABLE
                                  + guest.ONESHOT_TORAM + guest.UNPLUG_WORKLOAD),
    )  # fmt: skip


SMALL_RAM_MIB = 1024


@pytest.fixture(scope="session")
def small_ram_boot(toram_boot: Boot, stick: Stick, artifacts: Artifacts) -> Boot:
    """"Run from RAM" again (chosen by the toram boot) on a machine with too little memory for
    the copy: the boot must go on from the disk and say why. A second stick written from the
    same image is plugged in (the same ESP partition UUID): which one booted cannot be told,
    so neither persistent partition may be used."""
    twin = disk.overlay(artifacts.raw, stick.path.with_name("twin.qcow2"))
    return boot_and_check(
        "small-ram-boot", stick.path, vars_template=toram_boot.vars_after,
        memory_mib=SMALL_RAM_MIB, extra_args=media.second_disk_args(twin),
        script=guest.check_script(guest.TORAM_FACTS + guest.PERSIST_FACTS, core=False),
        power_off=False,  # the stick's last boot; the main and toram boots proved shutdown
    )  # fmt: skip
