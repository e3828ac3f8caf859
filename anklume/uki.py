"""Read a UKI (a PE image) from its file: the section table, a section, its command lines.

One reader for the build (`image/artifacts`: the usr hash a build pins), the update checks
(`updates/uki`: every command line pins the signed root hash) and rollback (`updates/rollback`:
which /usr slot a UKI boots). Only the table and the sections asked for are read, never the
whole 50-90 MB file. A UKI with profiles carries several `.cmdline` sections: one before the
first `.profile` marker (the base) and optionally one after each marker, so sections keep
their order.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

_MAX_SECTIONS = 96  # PE allows 65535; a UKI has ~12 (more with profiles): refuse absurd tables
_USRHASH = re.compile(r"(?:^|\s)usrhash=(\S*)")
_ROOT_HASH = re.compile(r"[0-9a-f]{64}")


class NotPE(ValueError):
    pass


@dataclass(frozen=True)
class Section:
    name: str
    offset: int  # in the file
    size: int  # the real length (virtual size; raw data is padded to the file alignment)


def sections(path: Path) -> list[Section]:
    """The section table, in file order."""
    with open(path, "rb") as f:
        dos = f.read(0x40)
        if len(dos) < 0x40 or dos[:2] != b"MZ":
            raise NotPE(f"{path.name}: no MZ header")
        (pe,) = struct.unpack_from("<I", dos, 0x3C)
        f.seek(pe)
        head = f.read(24)
        if len(head) < 24 or head[:4] != b"PE\0\0":
            raise NotPE(f"{path.name}: no PE signature at {pe:#x}")
        (count,) = struct.unpack_from("<H", head, 6)
        (opt_size,) = struct.unpack_from("<H", head, 20)
        if count > _MAX_SECTIONS:
            raise NotPE(f"{path.name}: {count} sections")
        f.seek(pe + 24 + opt_size)
        table = f.read(40 * count)
        if len(table) < 40 * count:
            raise NotPE(f"{path.name}: section table cut short")
    out = []
    for i in range(count):
        raw = table[40 * i : 40 * i + 40]
        name = raw[:8].rstrip(b"\0").decode("ascii", errors="replace")
        vsize, _vaddr, rsize, rptr = struct.unpack_from("<IIII", raw, 8)
        out.append(Section(name, rptr, min(vsize, rsize) if vsize else rsize))
    return out


def read(path: Path, s: Section) -> bytes:
    with open(path, "rb") as f:
        f.seek(s.offset)
        return f.read(s.size)


def section(path: Path, name: str) -> bytes | None:
    """The first section of that name (the base one of a UKI with profiles), or None."""
    for s in sections(path):
        if s.name == name:
            return read(path, s)
    return None


def _text(data: bytes) -> str:
    return data.rstrip(b"\0").decode(errors="replace").strip()


def cmdline(path: Path) -> str:
    """The base command line ("" when the UKI has none)."""
    data = section(path, ".cmdline")
    return _text(data) if data is not None else ""


def cmdlines(path: Path) -> dict[str, str]:
    """Every command line the UKI can boot with: {"base": ..., "profile 0": ..., ...}.

    A profile without its own `.cmdline` boots with the base one (systemd-stub falls back to
    the sections before the first `.profile`), so it is listed with the base value.
    """
    base: str | None = None
    profiles: list[str | None] = []
    for s in sections(path):
        if s.name == ".profile":
            profiles.append(None)
        elif s.name == ".cmdline":
            text = _text(read(path, s))
            if profiles:
                profiles[-1] = text
            elif base is None:
                base = text
    result = {"base": base or ""}
    for i, p in enumerate(profiles):
        result[f"profile {i}"] = p if p is not None else (base or "")
    return result


def usrhash_values(line: str) -> list[str]:
    """Every `usrhash=` value on a command line, as written (checks report what they found)."""
    return _USRHASH.findall(line)


def is_root_hash(value: str) -> bool:
    """A dm-verity root hash as usrhash= takes it: sha256, 64 lowercase hex digits."""
    return _ROOT_HASH.fullmatch(value) is not None


def usr_hash(line: str) -> str | None:
    """The dm-verity root hash a command line pins: its one well-formed `usrhash=`, else None."""
    found = [v for v in usrhash_values(line) if is_root_hash(v)]
    return found[0] if len(found) == 1 else None
