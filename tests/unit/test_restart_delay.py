"""The countdown before a stopped or unhealthy boot restarts (image/initrd/usr/lib/anklume/
restart-delay, run by stop-reboot and health-failed): the shipped script, run by a real sh."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "image/initrd/usr/lib/anklume/restart-delay"


def delay(tmp_path: Path, credential: str | None, *, imported: bool = True) -> str:
    env = {"PATH": "/usr/bin:/bin"}
    if imported:
        env["CREDENTIALS_DIRECTORY"] = str(tmp_path)
    if credential is not None:
        (tmp_path / "anklume.restart_delay").write_text(credential)
    r = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True,
                       check=True, timeout=10)
    assert r.stderr == ""
    return r.stdout.strip()


@pytest.mark.parametrize("credential", [None, "", "abc", "-5", "2s", "31", "300",
                                        "99999999999999999999999"])
def test_the_countdown_is_30_s_unless_a_credential_shortens_it(
        tmp_path: Path, credential: str | None) -> None:
    # Nothing, garbage, or a longer wait: the 30 s a person needs to read why.
    assert delay(tmp_path, credential) == "30"


@pytest.mark.parametrize(("credential", "want"), [("2", "2"), ("0", "0"), ("29\n", "29")])
def test_a_credential_can_only_shorten_the_countdown(
        tmp_path: Path, credential: str, want: str) -> None:
    assert delay(tmp_path, credential) == want


def test_without_imported_credentials_the_countdown_is_30_s(tmp_path: Path) -> None:
    assert delay(tmp_path, "2", imported=False) == "30"
