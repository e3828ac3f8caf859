"""The greeting above the console's login prompt (image/extra/usr/lib/anklume/console-greeting),
run by a real sh against efivarfs-like files: it warns when Secure Boot is off or in setup
mode, and only then. (On the appliance, the main boot's console shows it with Secure Boot on.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from anklume import secureboot

SCRIPT = Path(__file__).resolve().parents[2] / "image/extra/usr/lib/anklume/console-greeting"


def greeting(tmp_path: Path, secure: int | None, setup: int | None) -> str:
    efivars = tmp_path / "efivars"
    efivars.mkdir()
    for name, value in (("SecureBoot", secure), ("SetupMode", setup)):
        if value is not None:
            (efivars / f"{name}-{secureboot.GLOBAL_GUID}").write_bytes(b"\x06\0\0\0"
                                                                       + bytes([value]))
    env = {"PATH": "/usr/bin:/bin", "EFIVARS": str(efivars), "ISSUE_D": str(tmp_path / "issue.d")}
    subprocess.run(["sh", str(SCRIPT)], env=env, check=True, timeout=10, capture_output=True)
    return (tmp_path / "issue.d/anklume-pool.issue").read_text()


@pytest.mark.parametrize(("secure", "setup", "warned"), [
    (1, 0, None), (0, 0, "Secure Boot is off"), (None, None, "Secure Boot is off"),
    (0, 1, "Secure Boot is in setup mode"),
])
def test_the_console_warns_unless_secure_boot_is_on(
        tmp_path: Path, secure: int | None, setup: int | None, warned: str | None) -> None:
    text = greeting(tmp_path, secure, setup)
    assert "Live mode" in text  # this host has no firstboot.json: the live-mode text
    if warned is None:
        assert "WARNING" not in text, text
    else:
        assert f"WARNING: {warned}" in text, text
