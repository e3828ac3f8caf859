"""Console I/O for the wizard, injectable: the TTY version uses input()/getpass (a secret is
never echoed); tests pass a scripted one and drive the whole flow."""

from __future__ import annotations

import getpass
import sys
from typing import Protocol


class Console(Protocol):
    def say(self, text: str) -> None: ...
    def ask(self, prompt: str) -> str: ...
    def secret(self, prompt: str) -> str: ...


class Tty:
    def say(self, text: str) -> None:
        print(text, flush=True)

    def ask(self, prompt: str) -> str:
        return input(prompt + " ").strip()

    def secret(self, prompt: str) -> str:
        return getpass.getpass(prompt + " ")


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()
