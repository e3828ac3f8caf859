"""Version strings of the appliance: numeric, dot-separated (anklume/VERSION), compared by number.

Kept deliberately narrow: a version becomes a GPT partition label and a file name, and
systemd-sysupdate orders versions with its own comparison; restricting ourselves to plain
numbers makes both orders agree ("0.10.0" > "0.9.0" for both).
"""

from __future__ import annotations

import re

from anklume.updates.errors import ManifestInvalid

_VERSION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}")


def valid(v: str) -> bool:
    return isinstance(v, str) and _VERSION.fullmatch(v) is not None


def key(v: str) -> tuple[int, ...]:
    if not valid(v):
        raise ManifestInvalid(f"version {v!r} is not numeric dot-separated (like 1.2.3)")
    parts = [int(p) for p in v.split(".")]
    # "1.2" and "1.2.0" are the same version.
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def newer(a: str, b: str) -> bool:
    """a is strictly newer than b."""
    return key(a) > key(b)
