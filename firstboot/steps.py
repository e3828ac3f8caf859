"""What a plan is made of: steps of commands, file writes and the final record (values only).

A secret never sits in a step: a command names the secret it reads on stdin ("passphrase"),
and apply looks it up at run time, so a plan can be printed, logged and compared in tests.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    stdin: str | None = None  # name of a secret fed on stdin, never its value
    check: bool = True  # False: a failure is expected and harmless (stopping a stopped unit)
    # A heading: stdout is shown once on the console under it (the recovery key), never logged.
    show_output: str = ""
    capture_as: str | None = None  # remember stdout (stripped) under this name for later steps

    def __str__(self) -> str:
        s = shlex.join(self.argv)
        return f"{s} < {self.stdin}" if self.stdin else s


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: str  # or "{secret:NAME}" is never used: file contents here are not secret
    mode: int = 0o644
    dir_mode: int = 0o755

    def __str__(self) -> str:
        return f"write {self.path} (mode {self.mode:o})"


@dataclass(frozen=True)
class Record:
    """Write the choices file with done=true; `facts` are filled from earlier captures."""

    fields: tuple[tuple[str, str], ...]  # (choices field, literal value or "@capture")

    def __str__(self) -> str:
        return "record the choices and mark the first boot done"


Action = Command | WriteFile | Record


@dataclass(frozen=True)
class Step:
    key: str  # stable id: "erase", "pool", "datasets", "tpm2", "vault", "admin", "incus", "record"
    title: str
    details: tuple[str, ...] = ()
    actions: tuple[Action, ...] = field(default_factory=tuple)
