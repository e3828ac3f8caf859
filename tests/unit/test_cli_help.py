"""`anklume --help`: every command once, grouped by what the user is doing, in that order, each
with one line of help; the installed entry point (not the bare typer app) is what is run."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from anklume import cli


def _help() -> str:
    # The entry point as installed, in a child: what a user's terminal shows (wide, no colour).
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    r = subprocess.run([sys.executable, "-c", "from anklume.cli import run; run()", "--help"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_commands_are_grouped_by_what_the_user_is_doing() -> None:
    out = _help()
    titles = [m.group(1) for m in re.finditer(r"─ ([^─]+?) ─", out)]
    assert titles == ["Options", *cli.PANELS], titles
    for panel, names in cli.PANELS.items():
        box = out[out.index(f"─ {panel} ─"):]
        box = box[: box.index("╰")]
        listed = re.findall(r"^│ (\w+) ", box, re.M)
        assert listed == list(names), (panel, listed)
    # One line each at this width: the first sentence, not the whole docstring.
    assert re.search(r"│ apply +Make Incus and nftables match infra.yml; exit 1 if any resource "
                     r"failed\. +│", out), out


def test_errors_and_exit_codes_go_through_the_grouped_command() -> None:
    r = subprocess.run([sys.executable, "-c", "from anklume.cli import run; run()", "bogus"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "No such command 'bogus'" in r.stderr, r.stderr
