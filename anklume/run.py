"""The one choke point for external commands (incus, nft, mkosi, cryptsetup, zpool...)."""

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence

from anklume.errors import CommandError

_log = logging.getLogger("anklume.run")


def run(
    argv: Sequence[str],
    *,
    input: str | bytes | None = None,
    check: bool = True,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a pinned locale; on failure raise CommandError with its stderr."""
    argv = [str(a) for a in argv]
    full_env = {**os.environ, "LC_ALL": "C.UTF-8", **(env or {})}
    _log.debug("+ %s", shlex.join(argv))
    text = not isinstance(input, bytes)
    proc = subprocess.run(
        argv, input=input, env=full_env, cwd=cwd, timeout=timeout, text=text,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if check and proc.returncode != 0:
        err = proc.stderr if capture else ""
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        raise CommandError(argv, proc.returncode, err or "")
    return proc
