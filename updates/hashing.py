"""Streamed size and SHA-256 of a file (slots are 512 MiB: never read one into memory)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from anklume.updates.errors import FileMismatch, MissingFile

CHUNK = 1024 * 1024


def digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def check(path: Path, size: int, sha256: str) -> None:
    """Refuse a file whose size or hash is not the manifest's (size first: it is cheap)."""
    if not path.is_file():
        raise MissingFile(f"{path.name}: not found in {path.parent}")
    got_size = path.stat().st_size
    if got_size != size:
        raise FileMismatch(f"{path.name}: size {got_size} bytes, manifest says {size}")
    _, got = digest(path)
    if got != sha256:
        raise FileMismatch(f"{path.name}: SHA-256 {got}, manifest says {sha256}")
