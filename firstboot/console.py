"""Console I/O for the wizard, injectable: the TTY version uses input()/getpass (a secret is
never echoed); tests pass a scripted one and drive the whole flow."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Protocol

# The kernel's consoles (e.g. "tty0 ttyS0"): where an unattended run's user is looking.
ACTIVE_CONSOLES = Path("/sys/class/tty/console/active")


class Console(Protocol):
    def say(self, text: str) -> None: ...
    def ask(self, prompt: str) -> str: ...
    def secret(self, prompt: str) -> str: ...
    def show_once(self, text: str) -> None: ...


def show_once(text: str, *, active: Path = ACTIVE_CONSOLES, dev: Path = Path("/dev")) -> int:
    """Show `text` to the person at the machine and nowhere else: on a terminal when stdout is
    one, else on each kernel console written directly (the unattended unit's stdout is the
    journal, which must not keep it). Returns how many places took it."""
    if sys.stdout.isatty():
        print(text, flush=True)
        return 1
    shown = 0
    try:
        names = active.read_text().split()
    except OSError:
        names = []
    for name in names:
        try:
            with (dev / name).open("w") as out:
                out.write(text.replace("\n", "\r\n") + "\r\n")
            shown += 1
        except OSError:
            continue
    return shown


class Tty:
    def say(self, text: str) -> None:
        print(text, flush=True)

    def ask(self, prompt: str) -> str:
        return input(prompt + " ").strip()

    def secret(self, prompt: str) -> str:
        return getpass.getpass(prompt + " ")

    def show_once(self, text: str) -> None:
        show_once(text)


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()
