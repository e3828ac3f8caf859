"""The one seam between the update code and the commands it runs (openssl, sbverify, bootctl,
systemd-sysupdate): a callable taking argv and returning the finished process, never raising on
a non-zero exit, so checks can turn a status into a typed refusal and tests can pass a fake."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def system(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    from anklume.run import run

    return run(argv, check=False)


def interactive(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Output straight to the terminal (systemd-sysupdate's own progress)."""
    from anklume.run import run

    return run(argv, check=False, capture=False)
