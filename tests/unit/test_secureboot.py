"""The firmware's Secure Boot state from efivarfs files (4 attribute bytes, then the value),
and what `anklume status` says of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anklume import secureboot

ATTRS = b"\x06\x00\x00\x00"


def efivars(tmp_path: Path, secure: int | None, setup: int | None) -> Path:
    d = tmp_path / "efivars"
    d.mkdir()
    for name, value in (("SecureBoot", secure), ("SetupMode", setup)):
        if value is not None:
            (d / f"{name}-{secureboot.GLOBAL_GUID}").write_bytes(ATTRS + bytes([value]))
    return d


@pytest.mark.parametrize(("secure", "setup", "want"), [
    (1, 0, secureboot.ON), (0, 0, secureboot.OFF), (0, 1, secureboot.SETUP),
    (None, None, secureboot.OFF),  # EFI without the variables: nothing enforces anything
])
def test_state(tmp_path: Path, secure: int | None, setup: int | None, want: str) -> None:
    assert secureboot.state(efivars(tmp_path, secure, setup)) == want


def test_no_efi(tmp_path: Path) -> None:
    assert secureboot.state(tmp_path / "absent") == secureboot.NO_EFI


def test_only_on_goes_without_a_warning() -> None:
    assert secureboot.warning(secureboot.ON) is None
    assert "off" in (secureboot.warning(secureboot.OFF) or "")
    assert "setup mode" in (secureboot.warning(secureboot.SETUP) or "")


def test_status_says_when_secure_boot_is_off(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from anklume import overview
    from anklume.cli import app

    monkeypatch.setenv("ANKLUME_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ANKLUME_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(secureboot, "EFIVARS", efivars(tmp_path, 0, 0))
    os_release = tmp_path / "os-release"
    os_release.write_text('ID=debian\nIMAGE_VERSION="0.9.1"\n')
    monkeypatch.setattr(overview, "OS_RELEASE", os_release)  # as on the appliance
    out = CliRunner().invoke(app, ["status"]).output
    assert "secure boot: off" in out and "WARNING: Secure Boot is off" in out, out
    d = json.loads(CliRunner().invoke(app, ["status", "--json"]).output)
    assert d["machine"]["secure_boot"] == "off", d
    assert any("Secure Boot is off" in w for w in d["warnings"]), d
    # A development host: the state is shown, the appliance's warning is not.
    monkeypatch.setattr(overview, "OS_RELEASE", tmp_path / "absent")
    out = CliRunner().invoke(app, ["status"]).output
    assert "a development host (secure boot: off)" in out and "WARNING" not in out, out
