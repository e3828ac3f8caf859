"""The one choke point for external commands (incus, nft, mkosi, cryptsetup, zpool...)."""

import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from anklume.errors import CommandError

_log = logging.getLogger("anklume.run")


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C.UTF-8", **(extra or {})}


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
    _log.debug("+ %s", shlex.join(argv))
    text = not isinstance(input, bytes)
    proc = subprocess.run(
        argv, input=input, env=_env(env), cwd=cwd, timeout=timeout, text=text,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if check and proc.returncode != 0:
        err = proc.stderr if capture else ""
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        raise CommandError(argv, proc.returncode, err or "")
    return proc


def stream(argv: Sequence[str], logfile: Path, *, echo: TextIO | None = None,
           env: Mapping[str, str] | None = None) -> int:
    """Run a long command (mkosi) with its output shown live on `echo` (default stderr) and
    kept whole in `logfile`; no stdin. Returns the exit status: the caller turns a failure into
    its own error, pointing at the log."""
    argv = [str(a) for a in argv]
    out = echo or sys.stderr
    _log.debug("+ %s (log %s)", shlex.join(argv), logfile)
    with logfile.open("w") as f:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_env(env))
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            out.write(line)
            f.write(line)
        return proc.wait()
