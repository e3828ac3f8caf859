"""`anklume vm`: the built image booted on this machine the way real hardware boots it.

OVMF with Secure Boot in setup mode at the first start, so the image enrols its own keys as on a
new PC; a TPM 2.0 (swtpm) when this host has one to offer; the disk grown as a stick's would be;
a blank data disk for the first-boot wizard's pool; QEMU's user network with the guest's SSH
port forwarded to a loopback port. A named machine keeps its disks, firmware variables and TPM
state in one directory, so a restart is the same machine; `fresh` starts over. Built on the VM
library of the boot tests (qemu.VMSpec): one QEMU argument list for tests and users.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from anklume.errors import PermanentError
from anklume.vm import disk, firmware, guest, qemu

DATA_DISK_SIZE = "20G"
DATA_DISK_SERIAL = "anklume-vm-data"
DATA_DISK_ID = "datadisk"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class VMFailed(PermanentError):
    pass


def root() -> Path:
    """Where machines live: $ANKLUME_VM_DIR, else $XDG_DATA_HOME/anklume/vms."""
    if os.environ.get("ANKLUME_VM_DIR"):
        return Path(os.environ["ANKLUME_VM_DIR"])
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local/share")
    return Path(data) / "anklume" / "vms"


@dataclass(frozen=True)
class Machine:
    name: str
    dir: Path

    @classmethod
    def named(cls, name: str) -> Machine:
        if not _NAME.match(name):
            raise VMFailed(f"machine name {name!r}: use 1-32 lowercase letters, digits and "
                           "dashes, starting with a letter or digit")
        return cls(name, root() / name)

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def data(self) -> Path:
        return self.dir / "data.qcow2"

    @property
    def tpm(self) -> Path:
        return self.dir / "tpm"

    @property
    def log(self) -> Path:
        return self.dir / "log"

    @property
    def info_file(self) -> Path:
        return self.dir / "machine.json"

    def info(self) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads(self.info_file.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def pid(self) -> int | None:
        """The running emulator's pid, or None (checked: a stale pid of another program is not
        this machine)."""
        pid = self.info().get("pid")
        if not isinstance(pid, int):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return pid if str(self.dir).encode() in b" ".join(cmdline) else None


def _run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise VMFailed(f"`{' '.join(argv)}` failed: {r.stderr.strip()}")


def prepare(m: Machine, image: Path, *, fresh: bool = False) -> list[str]:
    """Create what the machine lacks (its disk from `image`, the blank data disk); `fresh`
    deletes the machine first. Returns what was made, in words."""
    if fresh and m.dir.exists():
        if m.pid() is not None:
            raise VMFailed(f"machine {m.name} is running", hint=f"anklume vm stop {m.name}")
        shutil.rmtree(m.dir)
    m.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    made = []
    if not m.disk.exists():
        # A copy, not an overlay: a rebuild of the image must not change this machine's disk.
        tmp = m.disk.with_suffix(".tmp")
        _run(["qemu-img", "convert", "-O", "qcow2", str(image), str(tmp)])
        _run(["qemu-img", "resize", "-q", str(tmp), str(disk.TARGET_DISK_SIZE)])
        tmp.rename(m.disk)
        made.append(f"its disk from {image} ({disk.TARGET_DISK_SIZE // 1024**3} GiB, as a "
                    "flashed stick grows)")
    if not m.data.exists():
        _run(["qemu-img", "create", "-q", "-f", "qcow2", str(m.data), DATA_DISK_SIZE])
        made.append(f"a blank {DATA_DISK_SIZE} data disk for the encrypted pool")
    return made


def spec(m: Machine, *, memory_mib: int, cpus: int, ssh_port: int, tpm: bool, internet: bool,
         usb: bool, credentials: Mapping[str, str]) -> qemu.VMSpec:
    return qemu.VMSpec(
        name=f"anklume-vm-{m.name}", disk=m.disk, log_dir=m.log, state_dir=m.dir,
        vars_template=firmware.OVMF_VARS,  # setup mode: the image enrols its own keys
        smbios=guest.extra_credentials(dict(credentials)), memory_mib=memory_mib, cpus=cpus,
        boot_bus="usb" if usb else "virtio", ssh_forward_port=ssh_port, serial_input=True,
        tpm_state=m.tpm if tpm else None, internet=internet,
        extra_args=qemu.hotplug_disk_args(DATA_DISK_ID, m.data, chassis=3,
                                          serial=DATA_DISK_SERIAL),
    )


def start(m: Machine, s: qemu.VMSpec, *, image: Path) -> dict[str, object]:
    """Start the emulator and leave it running on its own; returns what machine.json keeps."""
    if m.pid() is not None:
        raise VMFailed(f"machine {m.name} is already running",
                       hint=f"anklume vm console {m.name}, or anklume vm stop {m.name}")
    vm = qemu.VM(s)
    try:
        vm.start()
    except qemu.VMError as e:
        vm.stop()
        raise VMFailed(str(e).splitlines()[0], hint=f"QEMU's output: {m.log / 'qemu.log'}"
                       ) from None
    info: dict[str, object] = {"pid": vm.pid, "ssh_port": s.ssh_forward_port, "accel": vm.accel,
                               "image": str(image), "tpm": s.tpm_state is not None,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    vm.detach()
    m.info_file.write_text(json.dumps(info, indent=2) + "\n")
    return info


def ssh_port(m: Machine, asked: int = 0) -> int:
    """The loopback port for the guest's SSH: the one asked for, else the one of the last start
    while it is free (so `ssh -p` and known_hosts keep working), else a free one."""
    if asked:
        return asked
    last = m.info().get("ssh_port")
    if isinstance(last, int):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", last))
                return last
            except OSError:
                pass
    return qemu.free_tcp_port()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our own child, not yet reaped) is gone for this purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def stop(m: Machine, timeout: float = 120, *, force: bool = False) -> str:
    """Shut the machine down as its power button would (ACPI); after `timeout`, or at once
    with `force`, pull the plug. Returns what happened, in words."""
    pid = m.pid()
    if pid is None:
        return f"machine {m.name} is not running"
    try:
        qmp = qemu.QMP(m.dir / "qmp.sock", timeout=10, alive=lambda: _alive(pid))
    except Exception:
        os.kill(pid, signal.SIGKILL)
        return f"machine {m.name} did not answer on its QMP socket: killed"
    try:
        if not force:
            qmp.execute("system_powerdown")
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.5)
            if not _alive(pid):
                return f"machine {m.name} shut down"
        if _alive(pid):
            qmp.execute("quit")
    except Exception:
        pass
    finally:
        qmp.close()
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    return f"machine {m.name} powered off" + ("" if force else f" (no shutdown in {timeout:.0f} s)")


def machines() -> list[Machine]:
    d = root()
    return sorted((Machine(p.name, p) for p in d.iterdir() if (p / "disk.qcow2").exists()),
                  key=lambda m: m.name) if d.is_dir() else []


DETACH_KEY = b"\x1d"  # Ctrl-]


def attach(m: Machine, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
    """The machine's serial console on this terminal until Ctrl-] (the machine keeps
    running) or until it powers off."""
    import select
    import termios
    import tty

    if m.pid() is None:
        raise VMFailed(f"machine {m.name} is not running", hint=f"anklume vm start --name {m.name}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(m.dir / "serial.sock"))
    saved = termios.tcgetattr(stdin_fd)
    tty.setraw(stdin_fd)
    try:
        while True:
            ready, _, _ = select.select([sock.fileno(), stdin_fd], [], [], 1.0)
            if sock.fileno() in ready:
                data = sock.recv(65536)
                if not data:
                    break
                os.write(stdout_fd, data)
            if stdin_fd in ready:
                keys = os.read(stdin_fd, 1024)
                if DETACH_KEY in keys:
                    break
                sock.sendall(keys)
            if not ready and m.pid() is None:
                break
    finally:
        termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        sock.close()
