"""`anklume vm`'s errors, each a clear message and a failing exit, before anything is made or
started (the machine directory stays empty). Its successes boot: tests/vm/test_vm_cli.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def vm(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from anklume.cli import run; run()", "vm",
                           *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ANKLUME_VM_DIR": str(tmp_path / "vms"), **env})


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "anklume_0.0.1.raw"
    p.write_bytes(b"\0" * 4096)
    return p


@pytest.mark.parametrize(("args", "env", "said"), [
    (["--name", "Bad_Name"], {}, "machine name 'Bad_Name'"),
    (["--credential", "novalue"], {}, "--credential 'novalue': expected NAME=VALUE"),
    (["--ssh-key", "/nonexistent/key.pub"], {}, "--ssh-key /nonexistent/key.pub"),
    ([], {"ANKLUME_QEMU": "/nonexistent/qemu"},
     "/nonexistent/qemu is missing (install qemu-system-x86"),
])
def test_start_refuses_with_the_reason(tmp_path: Path, image: Path, args: list[str],
                                       env: dict[str, str], said: str) -> None:
    r = vm(tmp_path, "start", "--detach", *args, str(image), **env)
    assert r.returncode != 0 and said in r.stderr, r.stderr
    assert not (tmp_path / "vms").exists() or not any((tmp_path / "vms").rglob("*.qcow2"))


def test_no_such_image(tmp_path: Path) -> None:
    r = vm(tmp_path, "start", "--detach", str(tmp_path / "absent.raw"))
    assert r.returncode != 0 and "absent.raw: no such image" in r.stderr, r.stderr


def test_stop_and_console_of_a_machine_that_is_not_running(tmp_path: Path) -> None:
    r = vm(tmp_path, "stop", "--name", "ghost")
    assert r.returncode == 0 and r.stdout.strip() == "machine ghost is not running", r.stdout
    r = vm(tmp_path, "console", "--name", "ghost")
    assert r.returncode != 0 and "machine ghost is not running" in r.stderr, r.stderr
