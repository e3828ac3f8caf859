"""QEMU and its QMP monitor, for booting the appliance image the way real hardware does.

Every boot goes through the firmware: OVMF with Secure Boot on, systemd-boot, the signed UKI.
Nothing is handed to QEMU with `-kernel`, because that would skip exactly what the tests claim
(signature checks and the UKI's pinned command line).

`VM` is a context manager: it owns a unique temporary directory (OVMF variables, QMP socket),
writes the serial console and the test channel to a log directory that is kept after the run,
talks to QEMU over QMP (qemu.qmp), and always cleans up: QMP `quit` with a timeout, then kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import QMPClient

from anklume.vm import firmware

QEMU = os.environ.get("ANKLUME_QEMU", "/usr/bin/qemu-system-x86_64")
SWTPM = "/usr/bin/swtpm"

# The guest side of the test channel (a virtio-serial port): /dev/virtio-ports/<name>.
TEST_PORT = "org.anklume.test"

# The boot disk's id and the PCIe root port it sits on: toram tests hot-unplug it by this id,
# and hot-unplug on q35 needs the device on its own root port.
BOOT_DISK_ID = "bootdisk"
BOOT_PORT_ID = "rp-boot"

# CSI/OSC escape sequences from OVMF and systemd-boot; removed so patterns match plain words.
_ANSI = re.compile(rb"\x1b\[[0-9;?=]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\r")


class VMError(Exception):
    """A VM did not do what the test waited for; the message says where the logs are."""

    def __init__(self, message: str, vm: VM | None = None) -> None:
        self.vm = vm
        if vm is not None:
            message = f"{message}\n{vm.describe_logs()}"
        super().__init__(message)


class BootTimeout(VMError):
    pass


class BootFailure(VMError):
    """A failure pattern showed up (or the guest powered off) before what we waited for."""


class EmulatorCrashed(VMError):
    """QEMU itself died (signal or error status): the only failure worth one retry."""


# --- accelerator -------------------------------------------------------------------------------


@functools.cache
def detect_accel() -> str:
    """'kvm' when a KVM guest with our exact machine settings reaches the firmware, else 'tcg'.

    /dev/kvm existing proves little: on some hosts KVM refuses SMM (which Secure Boot needs) or
    dies with an emulation failure. So boot OVMF once under KVM and look for its boot manager.
    Cached for the process: one probe per test session. ANKLUME_VM_ACCEL=tcg|kvm overrides it.
    """
    forced = os.environ.get("ANKLUME_VM_ACCEL")
    if forced:
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    with tempfile.TemporaryDirectory(prefix="anklume-kvm-probe-") as tmp:
        vars_fd = Path(tmp) / "vars.fd"
        shutil.copyfile(firmware.OVMF_VARS, vars_fd)
        serial = Path(tmp) / "serial.log"
        argv = [
            QEMU,
            *_machine_args("kvm", vars_fd),
            "-m",
            "256",
            "-display",
            "none",
            "-nic",
            "none",
            "-serial",
            f"file:{serial}",
            "-no-reboot",
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        ok = False
        while time.monotonic() < deadline and proc.poll() is None:
            if serial.exists() and b"BdsDxe" in serial.read_bytes():
                ok = True
                break
            time.sleep(0.5)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        return "kvm" if ok else "tcg"


def _machine_args(accel: str, vars_fd: Path) -> list[str]:
    # smm=on plus the secure pflash property: without them OVMF's Secure Boot variables are
    # writable by the guest OS and "Secure Boot enabled" would mean nothing.
    cpu = "host" if accel == "kvm" else "max"
    accel_arg = "kvm" if accel == "kvm" else "tcg,thread=multi"
    return [
        "-machine",
        "q35,smm=on",
        "-accel",
        accel_arg,
        "-cpu",
        cpu,
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        # The ICH9 TCO watchdog may reset the machine, as on a real board (the image arms it).
        "-global",
        "ICH9-LPC.noreboot=off",
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={firmware.OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={vars_fd}",
    ]


def host_problems(tpm: bool = False) -> list[str]:
    """Why this host cannot boot the image (empty when it can), each with the Debian package
    that fixes it; `tpm`: a TPM (swtpm) is wanted too."""
    problems = []
    if not os.access(QEMU, os.X_OK):
        problems.append(f"{QEMU} is missing (install qemu-system-x86: scripts/setup-host)")
    for f in (firmware.OVMF_CODE, firmware.OVMF_VARS):
        if not f.is_file():
            problems.append(f"{f} is missing (install ovmf: scripts/setup-host)")
    if tpm and not os.access(SWTPM, os.X_OK):
        problems.append(f"{SWTPM} is missing (install swtpm: scripts/setup-host)")
    if not problems:
        r = subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            problems.append(f"{QEMU} --version failed: {r.stderr.strip()}")
    return problems


# --- log files ---------------------------------------------------------------------------------


class LogWatch:
    """Reads a log file that QEMU appends to, as text without escape sequences.

    Works like expect: each successful wait moves a cursor past its match, so the next wait
    only sees newer output (a pattern from before a reboot does not satisfy a wait after it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._raw = b""
        self._text = ""
        self.cursor = 0

    def text(self) -> str:
        try:
            with self.path.open("rb") as f:
                f.seek(len(self._raw))
                new = f.read()
        except FileNotFoundError:
            new = b""
        if new:
            self._raw += new
            self._text = _ANSI.sub(b"", self._raw).decode(errors="replace")
        return self._text

    def search(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        return pattern.search(self.text(), self.cursor)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


def _compile(p: str | re.Pattern[str]) -> re.Pattern[str]:
    return p if isinstance(p, re.Pattern) else re.compile(p)


# --- QMP ---------------------------------------------------------------------------------------


class QMP:
    """A synchronous face for qemu.qmp's asyncio client.

    The client lives on its own event loop in a thread, so events (RESET, SHUTDOWN,
    DEVICE_DELETED) are collected while the test is busy reading logs; every call has a timeout.
    """

    def __init__(
        self, socket_path: Path, timeout: float = 30, alive: Callable[[], bool] = lambda: True
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.events: list[dict[str, Any]] = []
        self._events_lock = threading.Lock()
        self._client: QMPClient = self._run(self._make_client(), timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run(self._client.connect(str(socket_path)), 5)
                break
            except Exception:
                if time.monotonic() > deadline or not alive():
                    self.close()
                    raise
                time.sleep(0.2)
        self._pump = asyncio.run_coroutine_threadsafe(self._collect_events(), self._loop)

    async def _make_client(self) -> QMPClient:
        return QMPClient("anklume-test")

    async def _collect_events(self) -> None:
        async for event in self._client.events:
            with self._events_lock:
                self.events.append(dict(event))

    def _run(self, coro: Any, timeout: float) -> Any:
        fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        return fut.result(timeout + 5)

    def execute(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        return self._run(self._client.execute(cmd, args), timeout)

    def count_events(self, name: str) -> int:
        with self._events_lock:
            return sum(1 for e in self.events if e.get("event") == name)

    def wait_event(
        self,
        name: str,
        match: Callable[[dict[str, Any]], bool] = lambda e: True,
        timeout: float = 30,
        since: int = 0,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._events_lock:
                for e in self.events[since:]:
                    if e.get("event") == name and match(e):
                        return e
            time.sleep(0.1)
        raise TimeoutError(f"no QMP event {name} within {timeout:.0f} s")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if getattr(self, "_pump", None) is not None:
                self._pump.cancel()
            if getattr(self, "_client", None) is not None:
                self._run(self._client.disconnect(), 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


# --- the VM ------------------------------------------------------------------------------------


@dataclass
class VMSpec:
    """What to boot. `disk` must already be a private copy (see disk.py): the VM writes to it."""

    name: str
    disk: Path
    log_dir: Path
    disk_format: str = "qcow2"
    vars_template: Path = firmware.OVMF_VARS
    smbios: Sequence[str] = ()  # ready `-smbios` values (see guest.py)
    memory_mib: int = 2048
    # One vCPU: two guests run side by side on this 2-core host, and with two vCPUs each
    # (four TCG threads on two cores) a descheduled vCPU stalls the other one (cross-vCPU TLB
    # flushes, spinning on a lock its holder cannot release). Measured with the same image,
    # two boots at a time to "agent reconciled" and power-off: 435 s with one vCPU each, 584 s
    # with two. bench/image boots alone with two, as a user's machine would.
    cpus: int = 1
    accel: str | None = None  # None: detect_accel()
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    # "virtio": virtio-blk on its own PCIe root port; "usb": a USB stick (usb-storage on xHCI),
    # the way a flashed stick boots a real machine. Both can be hot-unplugged (BOOT_DISK_ID).
    boot_bus: str = "virtio"
    # A NIC on QEMU's user-mode network, isolated (restrict=on: the guest reaches nothing
    # outside), with the guest's port 22 forwarded to this loopback port on the host.
    ssh_forward_port: int | None = None
    # The serial console also takes input (VM.type_serial), e.g. a passphrase at its prompt:
    # a socket chardev that logs all output to serial.log whether a client is connected or not.
    serial_input: bool = False
    # A TPM 2.0 (swtpm) whose state lives in this directory: the same directory at the next
    # boot is the same machine's TPM; None: no TPM, as on a machine without one.
    tpm_state: Path | None = None
    # A machine that outlives this run (`anklume vm`): its sockets and firmware variables live
    # here, and the variables carry over to the next start (vars_template only seeds them).
    # None: a throwaway directory, fresh variables from vars_template at every start (tests).
    state_dir: Path | None = None
    # The user-mode network reaches out (NAT through this host), not only the SSH forward.
    internet: bool = False


class VM:
    def __init__(self, spec: VMSpec) -> None:
        self.spec = spec
        self.accel = spec.accel or detect_accel()
        self.log_dir = spec.log_dir
        self.serial_log = self.log_dir / "serial.log"
        self.channel_log = self.log_dir / "channel.log"
        self.qemu_log = self.log_dir / "qemu.log"
        self.workdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.swtpm: subprocess.Popen[bytes] | None = None
        self.qmp: QMP | None = None
        self.serial = LogWatch(self.serial_log)
        self.channel = LogWatch(self.channel_log)
        self.started_at = 0.0
        self.exit_status: int | None = None

    # lifecycle

    def __enter__(self) -> VM:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = self.elapsed() if self.started_at else 0.0
        self.stop()
        record_run(self.log_dir, self.spec.name, seconds, self.resets())

    @property
    def vars_fd(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "OVMF_VARS.fd"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def argv(self) -> list[str]:
        assert self.workdir is not None
        s = self.spec
        args = [
            QEMU,
            "-name",
            s.name,
            *_machine_args(self.accel, self.vars_fd),
            "-smp",
            str(s.cpus),
            "-m",
            str(s.memory_mib),
            "-display",
            "none",
            "-vga",
            "none",
            "-nic",
            "none",
            "-no-user-config",
            "-nodefaults",
            "-chardev",
            (f"socket,id=serial0,path={self.workdir / 'serial.sock'},server=on,wait=off,"
             f"logfile={self.serial_log}") if s.serial_input
            else f"file,id=serial0,path={self.serial_log}",
            "-serial",
            "chardev:serial0",
            "-chardev",
            f"socket,id=qmp0,path={self.workdir / 'qmp.sock'},server=on,wait=off",
            "-mon",
            "chardev=qmp0,mode=control",
            # The test channel: a virtio-serial port that only the check unit writes to, so its
            # lines never interleave with kernel or getty output.
            "-device",
            "virtio-serial-pci,id=vser0",
            "-chardev",
            f"file,id=chan0,path={self.channel_log}",
            "-device",
            f"virtserialport,chardev=chan0,name={TEST_PORT}",
            "-drive",
            f"if=none,id=boot0,format={s.disk_format},file={s.disk},cache=unsafe",
            *_boot_disk_args(s.boot_bus),
            "-device",
            "virtio-rng-pci",
        ]
        if s.ssh_forward_port is not None:
            args += [
                "-netdev",
                f"user,id=net0,restrict={'off' if s.internet else 'on'},"
                f"hostfwd=tcp:127.0.0.1:{s.ssh_forward_port}-:22",
                "-device",
                "virtio-net-pci,netdev=net0",
            ]
        if s.tpm_state is not None:
            args += [
                "-chardev", f"socket,id=tpm0chr,path={self.workdir / 'swtpm.sock'}",
                "-tpmdev", "emulator,id=tpm0,chardev=tpm0chr",
                "-device", "tpm-crb,tpmdev=tpm0",
            ]  # fmt: skip
        for value in s.smbios:
            args += ["-smbios", value]
        return [*args, *s.extra_args]

    def _start_swtpm(self) -> None:
        """swtpm on a socket QEMU connects to; it ends with QEMU (--terminate)."""
        assert self.workdir is not None and self.spec.tpm_state is not None
        if not os.access(SWTPM, os.X_OK):
            raise VMError(f"{SWTPM} is missing (install swtpm: scripts/setup-host)", self)
        self.spec.tpm_state.mkdir(parents=True, exist_ok=True)
        sock = self.workdir / "swtpm.sock"
        self.swtpm = subprocess.Popen(
            [SWTPM, "socket", "--tpm2", "--tpmstate", f"dir={self.spec.tpm_state}",
             "--ctrl", f"type=unixio,path={sock}", "--terminate",
             "--log", f"file={self.log_dir / 'swtpm.log'},level=1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 10
        while not sock.exists():
            if self.swtpm.poll() is not None or time.monotonic() > deadline:
                raise VMError(f"swtpm did not start (see {self.log_dir / 'swtpm.log'})", self)
            time.sleep(0.05)

    def start(self) -> None:
        if self.spec.state_dir is not None:
            self.workdir = self.spec.state_dir
            self.workdir.mkdir(parents=True, exist_ok=True)
            for stale in ("qmp.sock", "serial.sock", "swtpm.sock"):  # a previous run's
                (self.workdir / stale).unlink(missing_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"anklume-vm-{self.spec.name}-"))
        # Logs of an earlier run of the same test would confuse whoever reads them.
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.spec.state_dir is None or not self.vars_fd.exists():
            shutil.copyfile(self.spec.vars_template, self.vars_fd)
        self.serial = LogWatch(self.serial_log)
        self.channel = LogWatch(self.channel_log)
        if self.spec.tpm_state is not None:
            self._start_swtpm()
        argv = self.argv()
        (self.log_dir / "cmdline.txt").write_text(" ".join(argv) + "\n")
        with self.qemu_log.open("wb") as qlog:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=qlog,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.spec.env},
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        sock = self.workdir / "qmp.sock"
        # QEMU binds the socket during start-up; an emulator that exits first (bad arguments,
        # missing firmware) is reported at once with its own message.
        while not sock.exists() and self.elapsed() < 30:
            self._check_alive()
            time.sleep(0.05)
        try:
            self.qmp = QMP(sock, alive=self.running)
        except Exception as e:
            self._check_alive()
            raise VMError(f"QMP connection to {self.spec.name} failed: {e!r}", self) from e

    def detach(self) -> None:
        """Leave the emulator running on its own (it has its own session): a later process
        reaches it through the sockets in spec.state_dir."""
        assert self.spec.state_dir is not None, "only a machine with a state_dir outlives us"
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        self.proc = None
        self.swtpm = None
        self.workdir = None

    def stop(self, timeout: float = 20) -> None:
        """QMP quit with a timeout, then SIGKILL; always removes the temporary directory (a
        state_dir is kept)."""
        if self.proc is not None and self.proc.poll() is None and self.qmp is not None:
            with contextlib.suppress(Exception):
                self.qmp.execute("quit", timeout=timeout)
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self.exit_status = self.proc.returncode
        if self.swtpm is not None:
            if self.swtpm.poll() is None:
                self.swtpm.kill()
            self.swtpm.wait(10)
            self.swtpm = None
        if self.workdir is not None and self.spec.state_dir is None:
            # Keep the firmware variables next to the logs: the enrolled keys are reusable.
            if self.vars_fd.exists():
                with contextlib.suppress(OSError):
                    shutil.copyfile(self.vars_fd, self.log_dir / "OVMF_VARS.fd")
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    # state

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def resets(self) -> int:
        """Guest resets so far (Secure Boot key enrolment reboots once)."""
        return self.qmp.count_events("RESET") if self.qmp else 0

    def describe_logs(self) -> str:
        return (
            f"--- VM {self.spec.name} ({self.accel}, {self.elapsed():.0f} s): logs in "
            f"{self.log_dir} ---\n"
            f"serial console (last lines):\n{self.serial.tail()}\n"
            f"test channel:\n{self.channel.tail(30)}\n"
            f"qemu: {self._qemu_output()[-2000:]}"
        )

    def _qemu_output(self) -> str:
        try:
            return self.qemu_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _check_alive(self, expect_exit: bool = False) -> None:
        """Raise when QEMU has exited; a crash is told apart from a guest power-off."""
        if self.proc is None or self.proc.poll() is None:
            return
        rc = self.proc.returncode
        if rc == 0:
            if expect_exit:
                return
            raise BootFailure(f"guest powered off (QEMU exit 0) after {self.elapsed():.0f} s", self)
        # Killed by a signal (abort, segfault) or an emulator-internal error: a QEMU crash,
        # worth the one retry. Any other status is a usage error that a retry cannot fix.
        if rc < 0 or "internal error" in self._qemu_output().lower():
            raise EmulatorCrashed(f"QEMU crashed (status {rc})", self)
        raise VMError(f"QEMU exited with status {rc}", self)

    # waiting

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        fail_patterns: Iterable[str | re.Pattern[str]] = (),
        timeout: float = 300,
        log: str = "serial",
    ) -> re.Match[str]:
        """Wait until `pattern` appears in the serial log (or the test channel, log='channel').

        A failure pattern, in either log, ends the wait at once with BootFailure: a failed boot
        should not cost the whole timeout. QEMU exiting ends it too.
        """
        watch = self.channel if log == "channel" else self.serial
        want = _compile(pattern)
        fails = [_compile(p) for p in fail_patterns]
        deadline = time.monotonic() + timeout
        while True:
            m = watch.search(want)
            if m:
                watch.cursor = m.end()
                return m
            for f in fails:
                for w in (self.serial, self.channel):
                    bad = w.search(f)
                    if bad:
                        raise BootFailure(
                            f"failure pattern {f.pattern!r} matched {bad.group(0)!r} while "
                            f"waiting for {want.pattern!r}",
                            self,
                        )
            self._check_alive()
            if time.monotonic() > deadline:
                raise BootTimeout(f"{want.pattern!r} not seen within {timeout:.0f} s", self)
            time.sleep(0.25)

    def wait_exit(self, timeout: float = 120) -> int:
        """Wait for the guest to power off; returns QEMU's exit status."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BootTimeout(f"guest did not power off within {timeout:.0f} s", self) from None

    # QMP helpers

    def powerdown(self) -> None:
        assert self.qmp is not None
        self.qmp.execute("system_powerdown")

    def type_serial(self, text: str) -> None:
        """Type `text` on the serial console (needs VMSpec.serial_input): connect, send, leave
        (a connected client that does not read would hold the guest's console output)."""
        assert self.workdir is not None and self.spec.serial_input, "serial_input is off"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.workdir / "serial.sock"))
            sock.sendall(text.encode())
            time.sleep(0.5)  # QEMU reads before the hang-up

    def device_del(self, device_id: str, timeout: float = 60) -> None:
        """Hot-unplug a device and wait until the guest has let it go (DEVICE_DELETED)."""
        assert self.qmp is not None
        mark = len(self.qmp.events)
        self.qmp.execute("device_del", {"id": device_id})
        try:
            self.qmp.wait_event(
                "DEVICE_DELETED",
                lambda e: e.get("data", {}).get("device") == device_id,
                timeout=timeout,
                since=mark,
            )
        except TimeoutError as e:
            raise VMError(f"device {device_id} not released: {e}", self) from None


def _boot_disk_args(bus: str) -> list[str]:
    if bus == "virtio":
        # On its own PCIe root port, so it can be hot-unplugged (toram tests).
        return [
            "-device", f"pcie-root-port,id={BOOT_PORT_ID},chassis=1,slot=1",
            "-device",
            f"virtio-blk-pci,drive=boot0,id={BOOT_DISK_ID},bus={BOOT_PORT_ID},bootindex=1",
        ]  # fmt: skip
    if bus == "usb":
        return [
            "-device", "qemu-xhci,id=xhci",
            "-device",
            f"usb-storage,bus=xhci.0,drive=boot0,id={BOOT_DISK_ID},removable=on,bootindex=1",
        ]  # fmt: skip
    raise ValueError(f"unknown boot bus {bus!r}")


def record_run(log_dir: Path, name: str, seconds: float, resets: int = 0) -> None:
    """For the run's cost summary (tests/conftest.py): one file per QEMU run, with the test
    group that ran it (set per test by tests/conftest.py)."""
    with contextlib.suppress(OSError):
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "qemu-run.json").write_text(json.dumps({
            "vm": name, "seconds": round(seconds, 1), "resets": resets,
            "group": os.environ.get("ANKLUME_TEST_GROUP", "")}) + "\n")


def free_tcp_port() -> int:
    """A loopback port nothing listens on now (for QEMU's host forward)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def hotplug_disk_args(device_id: str, image: Path, chassis: int, fmt: str = "qcow2",
                      serial: str | None = None) -> list[str]:
    """QEMU arguments for an extra disk on its own PCIe root port (so device_del works)."""
    blk = f"virtio-blk-pci,drive={device_id}-drv,id={device_id},bus=rp-{device_id}"
    return [
        "-device", f"pcie-root-port,id=rp-{device_id},chassis={chassis},slot={chassis}",
        "-drive", f"if=none,id={device_id}-drv,format={fmt},file={image}",
        "-device", blk + (f",serial={serial}" if serial else ""),
    ]  # fmt: skip


T = TypeVar("T")


def run_vm(spec: VMSpec, body: Callable[[VM], T]) -> T:
    """Boot `spec`, run `body(vm)`, always stop. One retry only when QEMU itself crashed.

    Guest failures are never retried: a flaky boot is a bug in the image, not in the test.
    A crash under KVM retries under TCG, the configuration known to work on every host.
    """
    for attempt in (1, 2):
        vm = VM(spec)
        try:
            with vm:
                return body(vm)
        except EmulatorCrashed:
            if attempt == 2:
                raise
            if vm.accel == "kvm":
                spec = replace(spec, accel="tcg")
            # keep the crashed run's logs next to the retry's
            crashed = spec.log_dir.with_name(spec.log_dir.name + ".crashed")
            shutil.rmtree(crashed, ignore_errors=True)
            with contextlib.suppress(OSError):
                shutil.copytree(spec.log_dir, crashed)
    raise AssertionError("unreachable")
