"""Fixtures for the boot tests: a current image, per-test log directories, the shared boot.

These tests claim features of the image (verity, Secure Boot, ...): when the host cannot run
QEMU they fail with the reason, they never skip. Missing KVM is not a failure (TCG is used).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import disk
import guest
import harness

REPO = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("ANKLUME_BUILD_DIR", REPO / "build"))
LOG_ROOT = Path(os.environ.get("ANKLUME_TEST_LOGS", BUILD_DIR / "test-logs"))

# Serial-console lines that end any wait for a healthy boot at once.
BOOT_FAILURES = [
    r"Kernel panic",
    r"You are in emergency mode",
    r"Entering emergency mode",
    r"(?i)security violation",
]

# Under TCG one boot is ~40 s to multi-user; the first boot adds OVMF's key enrolment reboot.
# These are ceilings for a hang, not expectations.
FIRST_BOOT_TIMEOUT = float(os.environ.get("ANKLUME_VM_BOOT_TIMEOUT", 600))


_SESSION_START = time.time()  # conftest is imported when the session starts


def log_dir_for(name: str) -> Path:
    return LOG_ROOT / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@pytest.fixture(scope="session")
def qemu_host() -> str:
    """The accelerator to use; fails (does not skip) when QEMU or OVMF is missing."""
    problems = harness.host_problems()
    if problems:
        pytest.fail(
            "this host cannot run the boot tests:\n  "
            + "\n  ".join(problems)
            + "\nThese tests check claimed image features, so they fail instead of skipping.",
            pytrace=False,
        )
    return harness.detect_accel()


@pytest.fixture(scope="session")
def artifacts(qemu_host: str):  # -> anklume.image.artifacts.Artifacts
    """The built image, brought up to date with `anklume build` (incremental, so fast when
    nothing changed). ANKLUME_VM_NO_BUILD=1 uses what is in build/ as it is."""
    from anklume.image import artifacts as art

    if os.environ.get("ANKLUME_VM_NO_BUILD") != "1":
        LOG_ROOT.mkdir(parents=True, exist_ok=True)
        build_log = LOG_ROOT / "build.log"
        anklume = REPO / ".venv" / "bin" / "anklume"
        cmd = [str(anklume) if anklume.exists() else "anklume", "build"]
        t0 = time.monotonic()
        with build_log.open("wb") as out:
            r = subprocess.run(
                cmd,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=45 * 60,
            )
        if r.returncode != 0:
            tail = "\n".join(build_log.read_text(errors="replace").splitlines()[-40:])
            pytest.fail(f"`{' '.join(cmd)}` failed ({r.returncode}); log {build_log}:\n{tail}")
        print(f"image build: {time.monotonic() - t0:.0f} s (log {build_log})")
    try:
        return art.find(BUILD_DIR)
    except art.ArtifactsNotFound as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A unique directory for disk copies, removed after the test (raw copies are large)."""
    d = Path(tempfile.mkdtemp(prefix="anklume-vmtest-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class Boot:
    """One finished boot of the image with the check unit."""

    report: guest.Report
    channel: str
    serial: str
    log_dir: Path
    vars_after: Path  # OVMF variables after the boot: Secure Boot keys enrolled
    resets: int  # guest resets seen (key enrolment)
    stages: dict[str, float]  # seconds since QEMU started, per milestone
    accel: str
    unplug: str  # "ok after N s" or why the scratch disk's hot-unplug failed

    def timing(self) -> str:
        marks = ", ".join(f"{k} {v:.1f} s" for k, v in self.stages.items())
        return f"accel={self.accel} resets={self.resets}: {marks}"


# The check unit reports within seconds of multi-user; this long after the login prompt
# without a word from it, the credentials were not picked up (not worth the whole timeout).
CHECK_START_GRACE = 120


SCRATCH_DISK_ID = "scratchdisk"
# A blank disk that stays: what the first-boot wizard must offer for the data pool.
DATA_DISK_ID = "datadisk"
DATA_DISK_SERIAL = "anklume-data"
DATA_DISK_BYTES = 5 * 1024**3
AGENT_BOOT_MEMORY_MIB = 3072


def boot_and_check(
    name: str,
    image: Path,
    vars_template: Path = harness.OVMF_VARS,
    timeout: float = FIRST_BOOT_TIMEOUT,
    script: str | None = None,
) -> Boot:
    """Boot `image` (a private copy) with the check unit; wait for its report and power-off.

    While the OS runs, a scratch disk on its own PCIe root port is hot-unplugged over QMP: the
    copy-to-RAM tests unplug the boot disk the same way, so the mechanism is proven here on the
    real guest kernel at the cost of a few seconds.
    """
    scratch = image.with_name(f"{image.stem}-scratch.qcow2")
    data = image.with_name(f"{image.stem}-data.qcow2")
    for path, size in ((scratch, "16M"), (data, str(DATA_DISK_BYTES))):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True, timeout=60
        )
    spec = harness.VMSpec(
        name=name,
        disk=image,
        log_dir=log_dir_for(name),
        vars_template=vars_template,
        disk_format="qcow2" if image.suffix == ".qcow2" else "raw",
        smbios=guest.smbios_credentials(script),
        # The agent deploys the default infra (four containers, Incus's state in RAM).
        memory_mib=AGENT_BOOT_MEMORY_MIB,
        extra_args=[
            *harness.hotplug_disk_args(SCRATCH_DISK_ID, scratch, chassis=2),
            *harness.hotplug_disk_args(DATA_DISK_ID, data, chassis=3, serial=DATA_DISK_SERIAL),
        ],
    )

    def body(vm: harness.VM) -> Boot:
        stages: dict[str, float] = {}
        # The script echoes its lines to the serial console too, so one wait sees whichever
        # comes first: the check starting, or a login prompt without it.
        first = vm.wait_for(
            r"ANKLUME-TEST check=started|login: ", fail_patterns=BOOT_FAILURES, timeout=timeout
        )
        stages["first-sign-of-os"] = vm.elapsed()
        if first.group(0).startswith("login"):
            vm.wait_for(
                "ANKLUME-TEST check=started",
                fail_patterns=BOOT_FAILURES,
                timeout=CHECK_START_GRACE,
                log="channel",
            )
        stages["check-started"] = vm.elapsed()
        t0 = vm.elapsed()
        try:
            vm.device_del(SCRATCH_DISK_ID, timeout=60)
            unplug = f"ok after {vm.elapsed() - t0:.1f} s"
        except harness.VMError as e:
            unplug = str(e).splitlines()[0]
        # The checks wait for the agent's first deploy: minutes under emulation.
        vm.wait_for(guest.RESULT, fail_patterns=BOOT_FAILURES, timeout=1200, log="channel")
        stages["report"] = vm.elapsed()
        vm.wait_exit(120)
        stages["power-off"] = vm.elapsed()
        channel = vm.channel.text()
        return Boot(
            report=guest.parse_report(channel),
            channel=channel,
            serial=vm.serial.text(),
            log_dir=vm.log_dir,
            vars_after=vm.log_dir / "OVMF_VARS.fd",
            resets=vm.resets(),
            stages=stages,
            accel=vm.accel,
            unplug=unplug,
        )

    try:
        boot = harness.run_vm(spec, body)
    finally:
        scratch.unlink(missing_ok=True)
        data.unlink(missing_ok=True)
    timing = f"{name}: {boot.timing()}; scratch disk unplug {boot.unplug}\n"
    (boot.log_dir / "timing.txt").write_text(timing)
    print(timing, end="")
    return boot


@pytest.fixture(scope="session")
def main_disk(artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The disk of the main boot and of the second boot (the same machine, rebooted)."""
    work = tmp_path_factory.mktemp("main-boot")
    image = disk.overlay(artifacts.raw, work / "disk.qcow2")
    yield image
    image.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def main_boot(main_disk: Path) -> Boot:
    """The one boot that most checks share (boots are the expensive part under TCG): fresh
    firmware variables, so it also goes through Secure Boot key enrolment and its reboot. The
    agent deploys the embedded default infra; at the end the check writes a broken infra.yml
    onto the persistent partition (the path unit applies it at once)."""
    return boot_and_check("main-boot", main_disk,
                          script=guest.check_script(guest.AGENT_FACTS + guest.EDIT_INFRA))


@pytest.fixture(scope="session")
def second_boot(main_boot: Boot, main_disk: Path) -> Boot:
    """The same disk booted again (keys already enrolled): the persistent partition is reused
    and holds the broken infra.yml the main boot left there."""
    return boot_and_check("second-boot", main_disk, vars_template=main_boot.vars_after,
                          script=guest.check_script(guest.AGENT_FACTS))


def record_timing(vm: harness.VM, text: str) -> None:
    """One line for the timings summary (and timing.txt next to the VM's logs)."""
    line = f"{vm.spec.name}: accel={vm.accel} resets={vm.resets()}: {text}"
    (vm.log_dir / "timing.txt").write_text(line + "\n")
    print(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Boot timings of this run at the end of the output (CI logs keep them)."""
    lines = []
    if LOG_ROOT.is_dir():
        for t in sorted(LOG_ROOT.glob("*/timing.txt")):
            if t.stat().st_mtime >= _SESSION_START:
                lines.append(t.read_text().strip())
    if lines:
        terminalreporter.section("VM boot timings")
        for line in lines:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"logs: {LOG_ROOT}")
