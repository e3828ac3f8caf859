"""One apply at a time: the boot unit, the path unit and a user's `anklume apply` share a lock.

flock(2) on paths.lock_file(): the kernel releases it when its holder dies, however it dies,
so there is never a stale lock to clean up. The file is never deleted (deleting a lock file
lets two processes each lock a different inode). The holder writes who it is into the file so a
waiter can name it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from anklume import exitcodes, paths
from anklume.errors import TemporaryError

POLL = 0.1  # seconds between tries while waiting
EXIT_BUSY = exitcodes.TEMPFAIL  # another apply holds the lock, try again later


@dataclass(frozen=True)
class Holder:
    pid: int | None
    command: str
    started: str

    def describe(self) -> str:
        pid = f" (pid {self.pid})" if self.pid else ""
        at = f" at {self.started}" if self.started else ""
        return f"the apply started by `{self.command}`{pid}{at}"


UNKNOWN = Holder(None, "another process", "")


class LockHeld(TemporaryError):
    """Another apply holds the lock."""

    exit_code = EXIT_BUSY

    def __init__(self, message: str, holder: Holder) -> None:
        super().__init__(message, hint="wait for it to finish, or run without --no-wait")
        self.holder = holder


def read_holder(fd: int) -> Holder:
    """Who holds the lock, from the file's contents; UNKNOWN between the holder's flock and its
    write, or for a file written by something else."""
    try:
        raw = os.pread(fd, 4096, 0)
        d = json.loads(raw.decode())
        return Holder(int(d["pid"]) if d.get("pid") else None, str(d["command"]),
                      str(d.get("started", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return UNKNOWN


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _holder_soon(fd: int) -> Holder:
    # The holder writes right after locking: give it a moment before saying "unknown".
    for _ in range(5):
        h = read_holder(fd)
        if h is not UNKNOWN:
            return h
        time.sleep(0.05)
    return UNKNOWN


@contextmanager
def apply_lock(who: str, wait: bool = True, timeout: float | None = None,
               on_wait: Callable[[Holder], None] | None = None) -> Iterator[None]:
    """Hold the apply lock for the `with` block. `who` is what a waiter is told (the command).
    wait=False fails at once with LockHeld; with a timeout, LockHeld after that many seconds.
    on_wait is called once, with the holder, when we have to wait."""
    path = paths.lock_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if not _try(fd):
            holder = _holder_soon(fd)
            if not wait:
                raise LockHeld(f"another apply is running: {holder.describe()}", holder)
            if on_wait is not None:
                on_wait(holder)
            deadline = None if timeout is None else time.monotonic() + timeout
            while not _try(fd):
                if deadline is not None and time.monotonic() >= deadline:
                    holder = read_holder(fd)
                    raise LockHeld(f"gave up after {timeout:g} s waiting for "
                                   f"{holder.describe()}", holder)
                time.sleep(POLL)
        me = {"pid": os.getpid(), "command": who,
              "started": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode() + b"\n", 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # still ours: no waiter can read a departed holder's name
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
