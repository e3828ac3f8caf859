"""One boot of the appliance image with the guest checks (vm.guest), from a QEMU start to the
report: the machine as the boot tests and benchmarks make it (the extra disks, credentials and
hot-unplugs every check boot carries), and a stick written by `anklume flash`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from anklume.vm import builds, disk, firmware, guest, qemu

# Serial-console lines that end any wait for a healthy boot at once.
BOOT_FAILURES = [
    r"Kernel panic",
    r"You are in emergency mode",
    r"Entering emergency mode",
    r"(?i)security violation",
]

_T = TypeVar("_T")

# Under TCG one boot is ~40 s to multi-user; a boot from setup mode adds the key enrolment reboot.
# These are ceilings for a hang, not expectations.
FIRST_BOOT_TIMEOUT = float(os.environ.get("ANKLUME_VM_BOOT_TIMEOUT", 600))


def log_dir_for(name: str) -> Path:
    return builds.log_root() / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


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
    host_keyscan: list[str]  # `ssh-keyscan` through the loopback forward: "type key" lines
    boot_unplug: str  # the boot disk's hot-unplug ("" when the boot did not pull it)

    def timing(self) -> str:
        marks = ", ".join(f"{k} {v:.1f} s" for k, v in self.stages.items())
        return f"accel={self.accel} resets={self.resets}: {marks}"

    def host_key(self, kind: str = "ssh-ed25519") -> str:
        keys = [line.split()[1] for line in self.host_keyscan if line.split()[0] == kind]
        return keys[0] if keys else ""


# The check unit reports within seconds of multi-user; this long after the login prompt
# without a word from it, the credentials were not picked up (not worth the whole timeout).
CHECK_START_GRACE = 120


SCRATCH_DISK_ID = "scratchdisk"
# A blank disk that stays: what the first-boot wizard must offer for the data pool.
DATA_DISK_ID = "datadisk"
DATA_DISK_SERIAL = "anklume-data"
DATA_DISK_BYTES = 5 * 1024**3
# A second "anklume stick" (a partition labelled anklume-persist): never to be mounted.
IMPOSTOR_DISK_ID = "impostor"
AGENT_BOOT_MEMORY_MIB = 3072
# A machine provisioned to stay in live mode: no setup offer on the consoles.
SKIP_WIZARD = "anklume.firstboot.skip"


def wait_on_serial(vm: qemu.VM, found: Callable[[str], _T], what: str, timeout: float) -> _T:
    """Poll the serial console until `found(text)` is true (returned); a failed boot, a dead
    VM or the timeout raise, naming `what` was awaited."""
    deadline = time.monotonic() + timeout
    while not (hit := found(text := vm.serial.text())):
        for p in BOOT_FAILURES:
            if re.search(p, text):
                raise qemu.VMError(f"boot failed before {what}: {p}", vm)
        if time.monotonic() > deadline or not vm.running():
            raise qemu.VMError(f"no {what} on the serial console", vm)
        time.sleep(0.5)
    return hit


def dialogue(*steps: tuple[str, str], timeout: float = 900) -> Callable[[qemu.VM], None]:
    """A person at the serial console: each text typed once its prompt appeared after the
    previous one (a `console` for boot_and_check)."""
    def console(vm: qemu.VM) -> None:
        pos = 0
        for prompt, text in steps:
            def shown(t: str, p: str = prompt, s: int = pos) -> int:
                # find() + 1: 0 when absent, so a prompt at the very start still counts
                return t.find(p, s) + 1

            pos = wait_on_serial(vm, shown, repr(prompt), timeout) - 1 + len(prompt)
            time.sleep(1)  # the prompt is read by now (and no-echo set for secrets)
            if text:
                vm.type_serial(text)
    return console


LIVE_PASSWORD = "anklume live session password"
LIVE_LOGIN_DONE = "LIVE-LOGIN-42"  # what the shell prints for `echo LIVE-LOGIN-$((6*7))`


def live_root_login(password: str = LIVE_PASSWORD) -> Callable[[qemu.VM], None]:
    """A person at the serial console of a live-mode machine: `root` at the login prompt,
    an empty password first (refused), then `password` twice; in the shell it gives, a line
    that says who it is and how root's password is now hashed, then `exit`."""
    return dialogue(
        ("login:", "root\n"),
        ("New password for root:", "\n"),
        ("The same again:", "\n"),
        ("An empty password is refused.", ""),
        ("New password for root:", password + "\n"),
        ("The same again:", password + "\n"),
        ("root@", "echo LIVE-LOGIN-$((6*7)) uid=$(id -u) hash=$(getent shadow root | cut -c6-8)\n"),
        (LIVE_LOGIN_DONE, "exit\n"),
    )


def restart_delay(seconds: int) -> dict[str, str]:
    """The credential that shortens the 30 s before a stopped or unhealthy boot restarts
    (image/initrd/usr/lib/anklume/restart-delay), for machines whose restarts are the point, not
    their countdown's length. A restart cannot cut the check's report short, however short the
    countdown: the check unit's stop waits for the script's `reported` (vm/guest.py).
    test_boot.py's corrupted /usr keeps and asserts 30 s."""
    return {"anklume.restart_delay": str(seconds)}


def _keyscan(port: int, deadline: float) -> list[str]:
    """Host keys of the guest's sshd through QEMU's loopback forward (the guest may still be
    booting: retried until `deadline`)."""
    while time.monotonic() < deadline:
        r = subprocess.run(
            ["ssh-keyscan", "-T", "20", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        lines = [
            line.split(None, 1)[1]
            for line in r.stdout.splitlines()
            if line and not line.startswith("#") and len(line.split()) >= 3
        ]
        if lines:
            return sorted(lines)
        time.sleep(5)
    return []


def ready_vars() -> Path:
    """Firmware variables with our keys enrolled and no boot menu (qemu.enrolled_vars), made
    once per test process from the built image's certificate: every boot that does not test
    the enrolment starts from them, instead of paying systemd-boot's enrolment and reset."""
    global _READY_VARS
    if _READY_VARS is None:
        dest = log_dir_for("ready-vars") / f"OVMF_VARS-{os.getpid()}.fd"
        dest.parent.mkdir(parents=True, exist_ok=True)
        key_dir = Path(json.loads((builds.build_dir() / "build.json").read_text())["key_dir"])
        _READY_VARS = firmware.enrolled_vars(key_dir / "db.crt", dest)
    return _READY_VARS


_READY_VARS: Path | None = None


def boot_and_check(
    name: str,
    image: Path,
    vars_template: Path | None = None,
    timeout: float = FIRST_BOOT_TIMEOUT,
    script: str | None = None,
    *,
    boot_bus: str = "virtio",
    memory_mib: int = AGENT_BOOT_MEMORY_MIB,
    ssh: bool = False,
    unplug_boot_disk: bool = False,
    dropins: dict[str, str] | None = None,
    credentials: dict[str, str] | None = None,
    data_disk: Path | None = None,
    console: Callable[[qemu.VM], None] | None = None,
    extra_args: Sequence[str] = (),
    cut_power_at: str | None = None,
    report_timeout: float = 1200,
    wizard: bool = False,
    tpm_state: Path | None = None,
    power_off: bool = True,
) -> Boot:
    """Boot `image` with the check unit; wait for its report and power-off.

    Every boot also carries a blank data disk (the wizard's pool), a disk posing as a second
    anklume stick, and a scratch disk on its own PCIe root port that is hot-unplugged over
    QMP (the mechanism the copy-to-RAM tests use on the boot disk). `ssh`: a NIC on QEMU's
    isolated user network and a key scan through the loopback forward. `unplug_boot_disk`:
    when the script says `unplug=ready`, the boot disk itself is pulled out; the guest may not
    be able to power off after that (without toram), so QEMU is then stopped by the qemu.
    `dropins`: unit drop-ins for failure injection (guest.dropin_credentials).
    `credentials`: more system credentials (name -> text), e.g. the wizard's answers.
    `data_disk`: a data disk that outlives this boot (the caller's), instead of a blank one.
    `console`: runs first, with input on the serial console (e.g. typing a passphrase at the
    prompt); the boot then goes on as usual. `extra_args`: more QEMU arguments (disks).
    `cut_power_at`: a pattern on the test channel at which QEMU is quit at once (a power
    cut); the report is what the guest said until then. `report_timeout`: how long the guest
    may take to report its result (longer for scripts that reboot several times).
    `vars_template`: the firmware variables to start from (default: ready_vars(), keys
    enrolled; firmware.OVMF_VARS for setup mode). `wizard`: leave the console setup offer on
    (anklume-wizard@.service); other boots pass the anklume.firstboot.skip credential, as a
    machine provisioned to stay in live mode would, so that their agent does not wait out the
    offer's countdown. `tpm_state`: a TPM 2.0 (swtpm)
    keeping its state in this directory (the same one again is the same machine's TPM).
    `power_off=False`: QEMU is quit as soon as the report is in, for a boot whose shutdown
    cannot happen (its boot disk pulled without toram: waiting only burnt the 2 minutes of the
    wait), or the last boot of a machine's life when earlier boots of the same kind already
    proved the shutdown (nothing boots that disk afterwards): 10-40 s of guest time each.
    """
    credentials = dict(credentials or {})
    if not wizard:
        credentials.setdefault(SKIP_WIZARD, "1")
    scratch = image.with_name(f"{image.stem}-scratch.qcow2")
    data = data_disk or image.with_name(f"{image.stem}-data.qcow2")
    impostor = disk.impostor_persist_disk(image.with_name(f"{image.stem}-impostor.raw"))
    blank = [(scratch, "16M")] + ([] if data_disk else [(data, str(DATA_DISK_BYTES))])
    for path, size in blank:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True, timeout=60
        )
    port = qemu.free_tcp_port() if ssh else None
    spec = qemu.VMSpec(
        name=name,
        disk=image,
        log_dir=log_dir_for(name),
        vars_template=vars_template or ready_vars(),
        disk_format="qcow2" if image.suffix == ".qcow2" else "raw",
        smbios=(guest.smbios_credentials(script) + guest.dropin_credentials(dropins or {})
                + guest.extra_credentials(credentials)),
        serial_input=console is not None,
        # The agent deploys the default infra (four containers, Incus's state in RAM).
        memory_mib=memory_mib,
        boot_bus=boot_bus,
        ssh_forward_port=port,
        tpm_state=tpm_state,
        extra_args=[
            *qemu.hotplug_disk_args(SCRATCH_DISK_ID, scratch, chassis=2),
            *qemu.hotplug_disk_args(DATA_DISK_ID, data, chassis=3, serial=DATA_DISK_SERIAL),
            *qemu.hotplug_disk_args(IMPOSTOR_DISK_ID, impostor, chassis=4, fmt="raw"),
            *extra_args,
        ],
    )

    def body(vm: qemu.VM) -> Boot:
        stages: dict[str, float] = {}
        if console is not None:
            console(vm)
            stages["console-done"] = vm.elapsed()
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
        except qemu.VMError as e:
            unplug = str(e).splitlines()[0]
        keys = _keyscan(port, time.monotonic() + 300) if port else []
        if port:
            stages["host-keyscan"] = vm.elapsed()
        boot_unplug = ""
        if unplug_boot_disk:
            vm.wait_for(r"ANKLUME-TEST unplug=ready", fail_patterns=BOOT_FAILURES, timeout=1500,
                        log="channel")
            stages["boot-disk-unplug"] = vm.elapsed()
            t0 = vm.elapsed()
            try:
                vm.device_del(qemu.BOOT_DISK_ID, timeout=60)
                boot_unplug = f"ok after {vm.elapsed() - t0:.1f} s"
            except qemu.VMError as e:
                boot_unplug = str(e).splitlines()[0]
        if cut_power_at is not None:
            vm.wait_for(cut_power_at, fail_patterns=BOOT_FAILURES, timeout=report_timeout,
                        log="channel")
            vm.stop(timeout=5)  # QMP quit: the guest gets no chance to flush or unmount
            stages["power-cut"] = vm.elapsed()
        else:
            # The checks wait for the agent's first deploy: minutes under emulation.
            vm.wait_for(guest.RESULT, fail_patterns=BOOT_FAILURES, timeout=report_timeout,
                        log="channel")
            stages["report"] = vm.elapsed()
        resets = vm.resets()  # before a quit: QMP goes with it
        try:
            if cut_power_at is None and not power_off:
                vm.stop(timeout=5)
                stages["quit-after-report"] = vm.elapsed()
            elif cut_power_at is None:
                vm.wait_exit(120)
                stages["power-off"] = vm.elapsed()
        except qemu.VMError:
            # Without its disk the guest may hang in shutdown: only a test that pulled the
            # disk tolerates that (its assertions are on the report, already received).
            if not unplug_boot_disk:
                raise
        channel = vm.channel.text()
        return Boot(
            report=guest.parse_report(channel),
            channel=channel,
            serial=vm.serial.text(),
            log_dir=vm.log_dir,
            vars_after=vm.log_dir / "OVMF_VARS.fd",
            resets=resets,
            stages=stages,
            accel=vm.accel,
            unplug=unplug,
            host_keyscan=keys,
            boot_unplug=boot_unplug,
        )

    try:
        boot = qemu.run_vm(spec, body)
    finally:
        for path in (scratch, impostor) if data_disk else (scratch, data, impostor):
            path.unlink(missing_ok=True)
    timing = f"{name}: {boot.timing()}; scratch disk unplug {boot.unplug}\n"
    (boot.log_dir / "timing.txt").write_text(timing)
    print(timing, end="")
    return boot


class FlashFailed(RuntimeError):
    pass


def flash_to_stick(image: Path, stick: Path, size: int = disk.TARGET_DISK_SIZE) -> str:
    """`anklume flash` onto a file standing for a USB stick bigger than the image (sparse):
    the disk every shared boot uses is the one a user's flash would produce."""
    stick.touch()
    cmd = [builds.anklume_exe(), "flash", str(image), str(stick), "--force", "--yes"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise FlashFailed(f"`{' '.join(cmd)}` failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    # A regular-file target ends where the image ends; a real stick is bigger, and the first
    # boot's repart needs that room for slot B and the persistent partition.
    if stick.stat().st_size < size:
        os.truncate(stick, size)
    return r.stdout + r.stderr


def record_timing(vm: qemu.VM, text: str) -> None:
    """One line for the timings summary (and timing.txt next to the VM's logs)."""
    line = f"{vm.spec.name}: accel={vm.accel} resets={vm.resets()}: {text}"
    (vm.log_dir / "timing.txt").write_text(line + "\n")
    print(line)
