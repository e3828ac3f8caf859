"""Update media for the boot tests and bench/update: later versions of this tree built with
`anklume build --version`, published with `anklume publish`, carried on disk images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import BUILT_FOR_RUN, LOG_ROOT, REPO, RUN_ID, below_boots, build_lock

STICK_LABEL = "ANKLUME-UPD"  # updates/source_usb.py: the documented label
# Agent work is not what these boots are about: no domains, so the real health gate passes
# within seconds of Incus starting.
EMPTY_INFRA = """\
schema_version: 1
project_name: anklume
global:
  addressing:
    base_octet: 10
    zone_base: 100
domains: {}
"""


def bump(version: str, n: int) -> str:
    """`version` with its last number raised by n (0.1.0 -> 0.1.2)."""
    head, _, last = version.rpartition(".")
    return f"{head}.{int(last) + n}" if head else str(int(last) + n)


def _anklume() -> str:
    exe = REPO / ".venv" / "bin" / "anklume"
    return str(exe) if exe.exists() else "anklume"


def build_version(version: str) -> Path:
    """`anklume build --version` of this tree into build/update-<version>/ (reused as it is
    with ANKLUME_VM_NO_BUILD=1 when it exists). One build at a time (the image build's lock),
    and once per test run: a second worker needing the same version reuses it."""
    out = REPO / "build" / f"update-{version}"
    if os.environ.get("ANKLUME_VM_NO_BUILD") == "1" and (out / "build.json").is_file():
        return out
    stamp = out / BUILT_FOR_RUN

    def built() -> bool:
        return bool(RUN_ID) and stamp.is_file() and stamp.read_text() == RUN_ID

    if built():  # without waiting for the lock (another version may be building under it)
        return out
    with build_lock():
        if built():
            return out
        _build_version(version, out)
        if RUN_ID:
            stamp.write_text(RUN_ID)
    return out


def _build_version(version: str, out: Path) -> None:
    log = LOG_ROOT / f"build-{version}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as f:
        r = subprocess.run([_anklume(), "build", "--version", version, "--build-dir", str(out)],
                           cwd=REPO, stdin=subprocess.DEVNULL, stdout=f,
                           stderr=subprocess.STDOUT, timeout=30 * 60, preexec_fn=below_boots)
    if r.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        pytest.fail(f"building {version} failed ({r.returncode}), log {log}:\n{tail}")


def publish(build_dir: Path, tree: Path) -> None:
    r = subprocess.run([_anklume(), "publish", "--build-dir", str(build_dir), "--out", str(tree)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"anklume publish {build_dir} failed ({r.returncode}):\n{r.stdout}{r.stderr}")


def ext4_disk(tree: Path, image: Path, label: str) -> Path:
    """A disk holding `tree` in an ext4 file system (what a user's stick would carry)."""
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) + 256 * 2**20
    image.unlink(missing_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(tree), str(image),
                    f"{size // 2**20}M"], check=True, timeout=600, stdin=subprocess.DEVNULL)
    return image


def usb_stick_args(image: Path) -> list[str]:
    return ["-device", "qemu-xhci,id=xhci-upd",
            "-drive", f"if=none,id=upd-drv,format=raw,readonly=on,file={image}",
            "-device", "usb-storage,bus=xhci-upd.0,drive=upd-drv,id=updstick,removable=on"]
