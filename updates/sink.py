"""Write a stream of chunks into a staging file: bounded by the manifest size, holes for zeros.

A usr slot file is 512 MiB of which about half is zeros past the squashfs; staging lives in RAM
(the root is a tmpfs), so all-zero chunks are skipped with a seek and the file stays sparse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from anklume.updates.errors import FileMismatch

Progress = Callable[[str, int, int], None]  # (file name, bytes done, bytes total)


def write(chunks: Iterable[bytes], dest: Path, *, offset: int, limit: int,
          progress: Progress | None = None) -> int:
    """Append chunks at `offset`; refuse to go past `limit`. Returns the new length; the file
    is cut to exactly that length even when the stream breaks (so a resume starts there)."""
    pos = offset
    mode = "r+b" if dest.exists() else "wb"
    with open(dest, mode) as f:
        f.truncate(offset)
        f.seek(offset)
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                if pos + len(chunk) > limit:
                    raise FileMismatch(
                        f"{dest.name}: the source sends more than the manifest's {limit} bytes")
                if chunk.count(0) == len(chunk):
                    f.seek(len(chunk), 1)
                else:
                    f.write(chunk)
                pos += len(chunk)
                if progress:
                    progress(dest.name, pos, limit)
        finally:
            f.truncate(pos)
    return pos
