"""Writing the image and reading it back: every byte of the image's apparent size.

A stick carries old data, so the holes of the sparse image are written as zeros on a device;
only a regular-file target (truncated first) may keep them as holes. The read-back drops the
device's page cache first, so the hash is of what the stick returns, not of our own buffers.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from anklume.errors import PermanentError
from anklume.image.flash import FlashRefused, human

CHUNK = 4 * 1024**2
# What a write or read returns when the stick is pulled out or its controller gives up.
VANISHED = frozenset({errno.ENODEV, errno.EIO, errno.ENXIO, errno.ENOSPC, errno.ENOMEDIUM})

Progress = Callable[[int, int, float], None]  # bytes done, bytes in all, seconds so far


class DeviceVanished(PermanentError):
    def __init__(self, path: str, err: OSError) -> None:
        super().__init__(f"the device disappeared while writing {path} "
                         f"({err.strerror or err}): the stick is not usable, write it again")


class VerifyFailed(PermanentError):
    pass


class WriteFailed(PermanentError):
    pass


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str
    seconds: float


def _write_block(fd: int, buf: memoryview) -> None:
    while buf:
        n = os.write(fd, buf)
        if n <= 0:  # a device that accepts nothing more is full or gone
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        buf = buf[n:]


def _open_target(path: str, is_file: bool) -> int:
    if is_file:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        # O_EXCL on a block device: the kernel refuses while anything mounts or holds it, which
        # closes the gap between our checks and the first write.
        return os.open(path, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise FlashRefused(f"refusing to write {path}: the kernel reports it in use "
                               "(mounted or held by another device)",
                               hint="nothing was written; unmount or close it first") from None
        raise WriteFailed(f"cannot open {path}: {e.strerror}") from None


def _failure(path: str, e: OSError) -> PermanentError:
    if e.errno in VANISHED:
        return DeviceVanished(path, e)
    return WriteFailed(f"writing {path} failed: {e.strerror or e}")


def write(image: str, size: int, path: str, is_file: bool,
          progress: Progress | None = None) -> Written:
    """Copy the first `size` bytes of `image` to `path` and fsync; the image's SHA-256."""
    start = time.monotonic()
    digest = hashlib.sha256()
    done = 0
    with open(image, "rb", buffering=0) as src:
        fd = _open_target(path, is_file)
        try:
            buf = bytearray(CHUNK)
            while done < size:
                n = src.readinto(memoryview(buf)[:min(CHUNK, size - done)])
                if not n:
                    raise WriteFailed(f"{image} ended at byte {done}, before its size {size}")
                block = memoryview(buf)[:n]
                digest.update(block)
                if is_file and buf.count(0, 0, n) == n:
                    os.lseek(fd, n, os.SEEK_CUR)  # a file target keeps the image's holes
                else:
                    _write_block(fd, block)
                done += n
                if progress:
                    progress(done, size, time.monotonic() - start)
            if is_file:
                os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as e:
            raise _failure(path, e) from None
        finally:
            with contextlib.suppress(OSError):  # the fsync above reported what matters
                os.close(fd)
    return Written(size, digest.hexdigest(), time.monotonic() - start)


def read_back(path: str, size: int) -> str:
    """SHA-256 of the first `size` bytes of `path`, read from the device itself."""
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise _failure(path, e) from None
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        left = size
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                raise VerifyFailed(f"{path} ended {left} bytes before the image's end")
            digest.update(chunk)
            left -= len(chunk)
    except OSError as e:
        raise _failure(path, e) from None
    finally:
        os.close(fd)
    return digest.hexdigest()


def verify(path: str, written: Written) -> str:
    got = read_back(path, written.size)
    if got != written.sha256:
        raise VerifyFailed(
            f"{path} does not read back what was written: SHA-256 {got} != image {written.sha256}",
            hint="the stick may be failing or fake (less capacity than it claims); try another")
    return got


def progress_line(done: int, total: int, seconds: float) -> str:
    rate = done / seconds / 1024**2 if seconds > 0 else 0.0
    pct = 100 * done // total if total else 100
    return f"{human(done)} / {human(total)}  {pct:3d}%  {rate:.1f} MiB/s"
