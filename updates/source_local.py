"""An update directory on a local filesystem (a mounted USB stick, a disk, a test's tmp dir).

Files are copied into staging, never verified in place: a stick could be swapped or rewritten
between the check and the install.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from anklume.updates import sink
from anklume.updates.errors import FileMismatch, MissingFile, SourceUnavailable

CHUNK = 1024 * 1024


class LocalSource:
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def read_small(self, rel: str, limit: int) -> bytes | None:
        """A small file (manifest, signature, `latest`), or None when it is absent."""
        if not self.root.is_dir():
            raise SourceUnavailable(f"{self.root}: no such directory")
        p = self.root / rel
        if not p.is_file():
            return None
        with open(p, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise FileMismatch(f"{p}: larger than {limit} bytes")
        return data

    def fetch(self, rel: str, dest: Path, size: int, sha256: str,
              progress: sink.Progress | None = None) -> None:
        p = self.root / rel
        if not p.is_file():
            raise MissingFile(f"{rel}: not found in {self.root}")
        got = p.stat().st_size
        if got != size:
            raise FileMismatch(f"{p}: size {got} bytes, manifest says {size}")

        def chunks() -> Iterator[bytes]:
            with open(p, "rb") as f:
                while c := f.read(CHUNK):
                    yield c

        n = sink.write(chunks(), dest, offset=0, limit=size, progress=progress)
        if n != size:
            raise FileMismatch(f"{p}: read {n} bytes, manifest says {size}")
