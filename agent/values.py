"""Checks of single values (names, images, paths, Incus config maps), each reporting its own
problem and returning a usable value so validation can go on and find the next one."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

from anklume.agent.schema import suggest
from anklume.problems import KeyPath, Report, describe

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# Incus device/volume/profile names: keep them to what is safe in paths and device keys.
ITEM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ITEM_RULE = "letters, digits, '.', '_' and '-'"
# An image alias (`debian/13`) or fingerprint, optionally behind a remote (`images:debian/13`).
IMAGE_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*:)?[A-Za-z0-9][A-Za-z0-9._/+-]*$")
CRON_ALIASES = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually",
                "@startup", "@never"}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# minute, hour, day of month, month, day of week: (lowest, highest, names from the lowest)
CRON_FIELDS = ((0, 59, ()), (0, 23, ()), (1, 31, ()), (1, 12, _MONTHS), (0, 6, _DAYS))
# The image remotes apply.py can turn into a server (apply._REMOTES) plus the local store.
IMAGE_REMOTES = ("images", "local")
EXPIRY_RE = re.compile(r"^\d+[dhm]$")
# The words Incus itself reads as true for a boolean config key.
TRUE_WORDS = {"true", "1", "yes", "on"}
HOST = "host"  # the policy keyword for the appliance itself
LAN = "lan"  # the policy keyword for whatever reaches the appliance from outside its domains
RESERVED = {HOST: "the appliance", LAN: "whatever is outside the domains (the LAN)"}
# YAML reads `no`, `on`, `1234` or `2024-01-01` as booleans, numbers or dates, not names.
QUOTE_HINT = 'put it in quotes ("...") so YAML reads it as text'


def show(value: object) -> str:
    """A value as quoted in messages."""
    if value is None:
        return "nothing"
    return f'"{value}"' if isinstance(value, str) else repr(value)


def is_true(value: str | None) -> bool:
    return (value or "").lower() in TRUE_WORDS


def name(r: Report, value: object, path: KeyPath, what: str, maximum: int) -> bool:
    """A domain or machine name: DNS-safe, at most `maximum` characters, not `host` or
    `lan`."""
    if not isinstance(value, str):
        r.error(path, f"{what} names must be strings, not {describe(value)}", QUOTE_HINT)
        return False
    if not NAME_RE.match(value):
        r.error(path, f'invalid {what} name "{value}"',
                "lowercase letters, digits and '-', not starting or ending with '-'")
        return False
    if len(value) > maximum:
        r.error(path, f'{what} name "{value}" is longer than {maximum} characters')
        return False
    if value in RESERVED:
        r.error(path, f'"{value}" is reserved: network policies use it for '
                f"{RESERVED[value]}")
        return False
    return True


def item(r: Report, value: object, path: KeyPath, what: str) -> bool:
    """A profile, device or volume name."""
    if isinstance(value, str) and ITEM_RE.match(value):
        return True
    r.error(path, f"{what} names are {ITEM_RULE}", QUOTE_HINT if not isinstance(value, str)
            else None)
    return False


def choice(r: Report, value: object, choices: tuple[str, ...], path: KeyPath) -> str:
    if value in choices:
        return str(value)
    r.error(path, f"must be one of {', '.join(choices)}, not {show(value)}",
            suggest(str(value), choices))
    return choices[0]


def image(r: Report, value: object, path: KeyPath, fallback: str) -> str:
    if isinstance(value, str) and IMAGE_RE.match(value):
        remote, sep, _ = value.partition(":")
        if sep and remote not in IMAGE_REMOTES:
            r.error(path, f'image remote "{remote}" is not supported',
                    "use " + " or ".join(f'"{x}:"' for x in IMAGE_REMOTES)
                    + ", or a local alias or fingerprint without a remote")
            return fallback
        return value
    r.error(path, f"{show(value)} is not an image alias or fingerprint",
            'e.g. "debian/13" or "images:debian/13"')
    return fallback


def abs_path(r: Report, value: object, path: KeyPath) -> str:
    """An absolute path without `..` (host paths must not escape their base), normalized."""
    if (isinstance(value, str) and value.startswith("/") and "\0" not in value
            and ".." not in value.split("/")):
        return posixpath.normpath(value)
    r.error(path, f"{show(value)} is not an absolute path",
            'it starts with "/" and has no ".." in it')
    return "/"


def cron_ok(value: str) -> bool:
    """What Incus accepts for snapshots.schedule: triggers separated by ", ", each an alias or
    five space-separated fields (robfig/cron's standard syntax, names case-insensitive)."""
    return all(t in CRON_ALIASES or _cron_trigger(t) for t in value.lower().split(", "))


def _cron_trigger(t: str) -> bool:
    fields = t.split(" ")
    return len(fields) == 5 and all(
        all(_cron_range(part, *bounds) for part in f.split(","))
        for f, bounds in zip(fields, CRON_FIELDS, strict=True))


def _cron_value(v: str, lo: int, hi: int, names: tuple[str, ...]) -> int | None:
    if v in names:
        return names.index(v) + lo
    return int(v) if v.isdigit() and v.isascii() and lo <= int(v) <= hi else None


def _cron_range(part: str, lo: int, hi: int, names: tuple[str, ...]) -> bool:
    rng, slash, step = part.partition("/")
    if slash and not (step.isdigit() and step.isascii() and int(step) > 0):
        return False
    if rng in ("*", "?"):
        return True
    a, dash, b = rng.partition("-")
    first, last = _cron_value(a, lo, hi, names), _cron_value(b, lo, hi, names) if dash else None
    return first is not None and not (dash and (last is None or last < first))


def string_map(r: Report, raw: object, path: KeyPath) -> dict[str, str]:
    """Incus config keys take strings: YAML `true`/`2` become "true"/"2"."""
    out: dict[str, str] = {}
    if not isinstance(raw, Mapping):
        r.error(path, f"must be a mapping, not {describe(raw)}")
        return out
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            r.error((*path, str(key)), f"keys must be strings, not {describe(key)}",
                    QUOTE_HINT)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[key] = str(value)
        else:
            r.error((*path, key), f"must be a string, number or boolean, not {describe(value)}")
    return out


def devices(r: Report, raw: object, path: KeyPath) -> dict[str, dict[str, str]]:
    """Incus devices: `name: {type: disk, ...}`, values as strings."""
    out: dict[str, dict[str, str]] = {}
    if not isinstance(raw, Mapping):
        r.error(path, f"must be a mapping, not {describe(raw)}")
        return out
    for dev, conf in raw.items():
        if not item(r, dev, (*path, str(dev)), "device"):
            continue
        assert isinstance(dev, str)
        if not isinstance(conf, Mapping):
            r.error((*path, dev), f"must be a mapping, not {describe(conf)}",
                    "e.g. {type: disk, source: /srv/x, path: /x}")
        else:
            out[dev] = string_map(r, conf, (*path, dev))
    return out


def disk_path(conf: Mapping[str, str]) -> str | None:
    """Where a device mounts inside the instance, if it is a disk."""
    return conf.get("path") if conf.get("type") == "disk" else None
