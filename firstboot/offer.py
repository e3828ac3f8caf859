"""The wizard offered on the boot consoles (tty1 and the serial console) while there is no pool.

One `anklume-wizard@<tty>.service` per console runs `anklume firstboot console`: it shows what
this is and waits for Enter. The first console where someone presses Enter takes the wizard
(an exclusive create of the claim file); the others say where the setup runs and wait for it
to end. Typing `live`, or nobody answering before the countdown ends, starts this boot in live
mode. Every instance then exits, so the login prompts appear (getty waits for the instance on
its console) and the agent, which waits for the decision, deploys onto the pool or into RAM.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from anklume.firstboot.console import Console
from anklume.firstboot.flow import DECLINED, DONE
from anklume.paths import run_dir

CLAIM = "wizard-console"  # holds the name of the console that took the wizard
FINISHED = "wizard-finished"  # how this boot's offer ended: done, declined, failed, live
COUNTDOWN_S = 60

WELCOME = """\
anklume: this machine has no encrypted data pool yet.
  The setup asks a few questions (the disk for the pool, a passphrase, the administrator's
  password or SSH key); nothing is erased before you confirm.
  Press Enter to set it up now on this console.
  Type live and Enter (or wait {secs} s) to start in live mode: compartments in RAM only,
  this offer comes back at the next boot."""


@dataclass(frozen=True)
class Paths:
    run_dir: Path = field(default_factory=run_dir)

    @property
    def claim(self) -> Path:
        return self.run_dir / CLAIM

    @property
    def finished(self) -> Path:
        return self.run_dir / FINISHED


def finish(paths: Paths, outcome: str) -> None:
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.finished.with_name(FINISHED + ".tmp")
    tmp.write_text(outcome + "\n")
    os.replace(tmp, paths.finished)


def claim(paths: Paths, tty: str) -> bool:
    """Take the wizard for `tty`; False when another console took it first."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(paths.claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return paths.claim.read_text().strip() == tty
    with os.fdopen(fd, "w") as f:
        f.write(tty + "\n")
    return True


def _line_ready(stream: TextIO, timeout: float) -> bool:
    ready, _, _ = select.select([stream], [], [], max(0.0, timeout))
    return bool(ready)


def offer(con: Console, tty: str, run_wizard: Callable[[], int], *, paths: Paths | None = None,
          stdin: TextIO | None = None, countdown: float = COUNTDOWN_S,
          clock: Callable[[], float] = time.monotonic,
          line_ready: Callable[[TextIO, float], bool] = _line_ready) -> str:
    """What this boot's offer came to on `tty`: done/declined/failed (the wizard ran here),
    live (typed or timed out), or elsewhere:<outcome> (it ran on another console)."""
    paths = paths or Paths()
    stdin = stdin or sys.stdin
    con.say(WELCOME.format(secs=int(countdown)))
    deadline = clock() + countdown
    next_note = countdown - 20
    while True:
        if paths.finished.exists():
            return "elsewhere:" + paths.finished.read_text().strip()
        if paths.claim.exists() and paths.claim.read_text().strip() != tty:
            other = paths.claim.read_text().strip()
            con.say(f"The setup runs on {other}; the login prompt comes here when it is done.")
            while not paths.finished.exists():
                time.sleep(1)
            return "elsewhere:" + paths.finished.read_text().strip()
        left = deadline - clock()
        if left <= 0:
            if claim(paths, tty):  # the console that decides for all of them
                finish(paths, "live")
                con.say("No answer: starting in live mode (state in RAM for this boot).")
                return "live"
            continue
        if left <= next_note:
            con.say(f"  (live mode in {int(left)} s)")
            next_note -= 20
        if not line_ready(stdin, min(1.0, left)):
            continue
        line = stdin.readline()
        if line == "":  # the terminal went away: nobody can answer here
            time.sleep(min(1.0, max(0.0, deadline - clock())))
            continue
        if not claim(paths, tty):
            continue  # another console was faster: the loop says where
        if line.strip().lower() == "live":
            finish(paths, "live")
            con.say("Starting in live mode (state in RAM for this boot).")
            return "live"
        rc = run_wizard()
        outcome = {DONE: "done", DECLINED: "declined"}.get(rc, "failed")
        finish(paths, outcome)
        if outcome == "declined":
            con.say("Nothing was changed: this boot continues in live mode; the setup is "
                    "offered again at the next boot.")
        elif outcome == "failed":
            con.say("The setup stopped (see the messages above); this boot continues in live "
                    "mode. Fix the cause and reboot to try again.")
        return outcome
