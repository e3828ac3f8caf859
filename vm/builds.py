"""The images that boots use: `anklume build` of this tree (and of later versions of it, for
updates), shared by concurrent processes, and where their builds and logs go.

Parallel test workers (pytest-xdist) share one build directory: the first to need an image
builds it under a lock; the others find it stamped with the run's id and reuse it instead of
running `anklume build` again (a no-change build still costs 1-2 minutes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from anklume.image.build import find_repo

BUILT_FOR_RUN = ".built-for-run"


class BuildFailed(RuntimeError):
    """`anklume build` failed; the message holds the end of its log."""


def repo() -> Path:
    return find_repo()


def build_dir() -> Path:
    return Path(os.environ.get("ANKLUME_BUILD_DIR") or repo() / "build")


def log_root() -> Path:
    """Where each VM's logs go (a directory per VM, kept after the run)."""
    return Path(os.environ.get("ANKLUME_TEST_LOGS") or build_dir() / "test-logs")


def run_id() -> str:
    """The id shared by the processes of one run (pytest-xdist sets it); "" outside a run."""
    return os.environ.get("PYTEST_XDIST_TESTRUNUID", "")


def anklume_exe() -> str:
    exe = repo() / ".venv" / "bin" / "anklume"
    return str(exe) if exe.exists() else "anklume"


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    # Not inside the build directory: the build may replace it.
    key = hashlib.sha256(str(build_dir().resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"anklume-build-{key}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _built_in_this_run(out: Path) -> bool:
    stamp = out / BUILT_FOR_RUN
    rid = run_id()
    return bool(rid) and stamp.is_file() and stamp.read_text() == rid


def below_boots() -> None:
    """preexec_fn of the update builds (V2, V3), which run beside other workers' boots: niced
    (10), so a QEMU guest gets the CPU first. A build is only slower; a guest starved of CPU
    misses its own deadlines (watchdog, health gate) and fails for the wrong reason: CI saw a
    21 s RCU stall in a guest on the 2-core host. The first image build is not niced: nothing
    boots before it is done, and every boot waits for it."""
    os.nice(10)


def _shared_build(out: Path, build: Callable[[], None], reuse: bool) -> Path:
    """Run `build` once per run for `out`; `reuse`: take what is in `out` as it is."""
    if reuse:
        return out
    # The stamp is checked before the lock too: once this run's image is built, the lock only
    # serialises the later builds (V2, V3), and waiting for those held another worker's first
    # boot back by 7 minutes.
    if _built_in_this_run(out):
        return out
    with build_lock():
        if not _built_in_this_run(out):
            build()
            if run_id():
                (out / BUILT_FOR_RUN).write_text(run_id())
    return out


def _run_build(argv: list[str], log: Path, timeout: float,
               preexec_fn: Callable[[], None] | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as f:
        r = subprocess.run(argv, cwd=repo(), stdin=subprocess.DEVNULL, stdout=f,
                           stderr=subprocess.STDOUT, timeout=timeout, preexec_fn=preexec_fn)
    if r.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise BuildFailed(f"`{' '.join(argv)}` failed ({r.returncode}); log {log}:\n{tail}")


def reuse_builds() -> bool:
    """ANKLUME_VM_NO_BUILD=1: use the images already built, as they are (no `anklume build`)."""
    return os.environ.get("ANKLUME_VM_NO_BUILD") == "1"


def image(reuse: bool | None = None) -> Path:
    """The build directory, brought up to date with `anklume build` (incremental, so fast
    when nothing changed) once per run; `reuse` (default: reuse_builds()): as it is."""
    out = build_dir()
    reuse = reuse_builds() if reuse is None else reuse

    def build() -> None:
        t0 = time.monotonic()
        log = log_root() / "build.log"
        _run_build([anklume_exe(), "build"], log, timeout=45 * 60)
        print(f"image build: {time.monotonic() - t0:.0f} s (log {log})")

    return _shared_build(out, build, reuse)


def version(ver: str, reuse: bool | None = None) -> Path:
    """`anklume build --version` of this tree into build/update-<version>/, niced below the
    boots, once per run (a second worker needing the same version reuses it); `reuse`
    (default: reuse_builds()): as it is when it was built before."""
    out = repo() / "build" / f"update-{ver}"
    reuse = reuse_builds() if reuse is None else reuse

    def build() -> None:
        _run_build([anklume_exe(), "build", "--version", ver, "--build-dir", str(out)],
                   log_root() / f"build-{ver}.log", timeout=30 * 60, preexec_fn=below_boots)

    return _shared_build(out, build, reuse and (out / "build.json").is_file())
