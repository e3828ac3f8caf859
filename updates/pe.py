"""Read the section table of a PE image (a UKI) from a file, without loading the 50-90 MB.

image/artifacts.pe_section reads the first section of a name from bytes in memory; here we need
every section in order, because a UKI with profiles carries several `.cmdline` sections: one
before the first `.profile` (the base) and optionally one after each `.profile` marker.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_MAX_SECTIONS = 96  # PE allows 65535; a UKI has ~12 (more with profiles): refuse absurd tables


class NotPE(ValueError):
    pass


@dataclass(frozen=True)
class Section:
    name: str
    offset: int  # in the file
    size: int  # the real length (virtual size; raw data is padded to the file alignment)


def sections(path: Path) -> list[Section]:
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
        raw = table[40 * i: 40 * i + 40]
        name = raw[:8].rstrip(b"\0").decode("ascii", errors="replace")
        vsize, _vaddr, rsize, rptr = struct.unpack_from("<IIII", raw, 8)
        out.append(Section(name, rptr, min(vsize, rsize) if vsize else rsize))
    return out


def read(path: Path, s: Section) -> bytes:
    with open(path, "rb") as f:
        f.seek(s.offset)
        return f.read(s.size)


def cmdlines(path: Path) -> dict[str, str]:
    """Every command line the UKI can boot with: {"base": ..., "profile 0": ..., ...}.

    A profile without its own `.cmdline` boots with the base one (systemd-stub falls back to
    the sections before the first `.profile`), so it is listed with the base value.
    """
    secs = sections(path)
    base: str | None = None
    profiles: list[str | None] = []
    for s in secs:
        if s.name == ".profile":
            profiles.append(None)
        elif s.name == ".cmdline":
            text = read(path, s).rstrip(b"\0").decode(errors="replace").strip()
            if profiles:
                profiles[-1] = text
            elif base is None:
                base = text
    result = {"base": base or ""}
    for i, p in enumerate(profiles):
        result[f"profile {i}"] = p if p is not None else (base or "")
    return result
