"""The one choke point for external commands (anklume/run.py), on real processes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from anklume.errors import CommandError
from anklume.run import run, stream


def test_run_pins_the_locale_and_raises_with_the_commands_stderr() -> None:
    assert run(["sh", "-c", "echo $LC_ALL"]).stdout == "C.UTF-8\n"
    with pytest.raises(CommandError) as e:
        run(["sh", "-c", "echo broken >&2; exit 3"])
    assert e.value.returncode == 3 and "broken" in str(e.value)
    assert run(["sh", "-c", "exit 3"], check=False).returncode == 3


def test_stream_shows_the_output_live_keeps_it_in_the_log_and_returns_the_status(
        tmp_path: Path) -> None:
    shown = io.StringIO()
    log = tmp_path / "cmd.log"
    script = "echo out; echo err >&2; echo $LC_ALL; read x || echo no-stdin; exit 4"
    rc = stream(["sh", "-c", script], log, echo=shown)
    assert rc == 4
    assert shown.getvalue() == log.read_text()
    assert log.read_text().splitlines() == ["out", "err", "C.UTF-8", "no-stdin"]
