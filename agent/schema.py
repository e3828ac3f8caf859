"""Every key infra.yml knows, one row each: level, name, type, default, and how it is treated.

`read(level, raw, path, report)` checks one mapping against its rows: unknown keys are errors
with the closest known key suggested, legacy keys are accepted with a warning, values of the
wrong type are errors; it returns the values with defaults filled in. Rules beyond the type
(ranges, references, addressing) live in validate.py and addressing.py.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from anklume.problems import KeyPath, Report, describe

ANY = object  # a value checked by validate.py itself (e.g. ports: a list or "all")


@dataclass(frozen=True)
class Key:
    level: str
    name: str
    type: type
    default: object = None
    required: bool = False
    # Part of the original anklume format but without effect on the appliance (Ansible
    # provisioning, desktop integration...): accepted so old files keep validating.
    legacy: bool = False


def _legacy(level: str, *names: str) -> tuple[Key, ...]:
    return tuple(Key(level, n, ANY, legacy=True) for n in names)


KEYS: tuple[Key, ...] = (
    Key("top", "schema_version", int, 1),
    Key("top", "project_name", str, required=True),
    Key("top", "global", dict, required=True),
    Key("top", "domains", dict, required=True),
    Key("top", "network_policies", list, []),
    Key("top", "shared_volumes", dict, {}),

    Key("global", "addressing", dict, {}),
    Key("global", "base_subnet", str),  # legacy addressing, still effective
    Key("global", "default_os_image", str, "debian/13"),
    Key("global", "gpu_policy", str, "exclusive"),
    Key("global", "firewall_mode", str, "host"),
    Key("global", "shared_volumes_base", str, "/srv/anklume/shares"),
    Key("global", "persistent_data_base", str, "/srv/anklume/data"),
    Key("global", "allow_privileged", bool, False),
    Key("global", "prune_at_boot", bool, False),
    *_legacy("global", "default_connection", "default_user", "ai_access_policy",
             "ai_access_default", "ai_vram_flush", "nesting_prefix", "resource_policy",
             "desktop"),

    Key("addressing", "base_octet", int, 10),
    Key("addressing", "zone_base", int, 100),
    *_legacy("addressing", "zone_step"),  # zone offsets are fixed per trust level here

    Key("domain", "description", str, ""),
    Key("domain", "enabled", bool, True),
    Key("domain", "trust_level", str, "semi-trusted"),
    Key("domain", "subnet_id", int),
    Key("domain", "ephemeral", bool, False),
    Key("domain", "profiles", dict, {}),
    Key("domain", "machines", dict, {}),
    *_legacy("domain", "ai_provider", "ai_sanitize", "file_portal", "desktop"),

    Key("profile", "config", dict, {}),
    Key("profile", "devices", dict, {}),

    Key("machine", "type", str, "lxc"),
    Key("machine", "ip", str),
    Key("machine", "os_image", str),  # default: global.default_os_image
    Key("machine", "description", str, ""),
    Key("machine", "ephemeral", bool),  # default: the domain's
    Key("machine", "gpu", bool, False),
    Key("machine", "profiles", list, ["default"]),
    Key("machine", "config", dict, {}),
    Key("machine", "devices", dict, {}),
    Key("machine", "boot_autostart", bool),
    Key("machine", "boot_priority", int),
    Key("machine", "snapshots_schedule", str),
    Key("machine", "snapshots_expiry", str),
    Key("machine", "persistent_data", dict, {}),
    # Named capabilities that weaken containment, accepted for this machine (agent/containment).
    Key("machine", "unsafe", list, []),
    Key("machine", "services", dict, {}),
    *_legacy("machine", "roles", "weight", "storage_volumes", "export_apps"),

    Key("service", "port", ANY),  # checked by services.py: an int 1-65535
    Key("service", "socket", ANY),  # an absolute path
    Key("service", "listen", ANY),  # a port or a path, like the service
    Key("service", "consumers", ANY, required=True),
    Key("service", "description", str, ""),

    Key("persistent_volume", "path", str, required=True),
    Key("persistent_volume", "readonly", bool, False),

    Key("policy", "description", str, ""),
    Key("policy", "from", str, required=True),
    Key("policy", "to", str, required=True),
    Key("policy", "ports", ANY, "all"),
    Key("policy", "protocol", str, "tcp"),
    Key("policy", "bidirectional", bool, False),

    Key("shared_volume", "source", str),  # default: <shared_volumes_base>/<name>
    Key("shared_volume", "path", str),  # default: /shared/<name>
    Key("shared_volume", "shift", bool, False),
    Key("shared_volume", "propagate", bool, False),
    Key("shared_volume", "consumers", dict, {}),
)

_BY_LEVEL: dict[str, dict[str, Key]] = {}
for _k in KEYS:
    _BY_LEVEL.setdefault(_k.level, {})[_k.name] = _k


def known(level: str) -> tuple[str, ...]:
    return tuple(_BY_LEVEL[level])


def suggest(name: str, choices: Iterable[object]) -> str | None:
    """`did you mean "x"?` for a misspelt key or name, or None."""
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else None


def _type_ok(value: object, t: type) -> bool:
    if t is ANY:
        return True
    if t is int:  # YAML `true` is a bool, and bool is an int in Python
        return isinstance(value, int) and not isinstance(value, bool)
    if t is dict:
        return isinstance(value, Mapping)
    return isinstance(value, t)


_TYPE_NAMES = {int: "an integer", str: "a string", bool: "true or false", dict: "a mapping",
               list: "a list"}


def read(level: str, raw: object, path: KeyPath, report: Report) -> dict[str, object] | None:
    """Check one mapping against the rows of `level`; None if it is not a mapping at all.

    A key whose value is null counts as absent (`machines:` with nothing under it).
    """
    if not isinstance(raw, Mapping):
        report.error(path, f"must be a mapping, not {describe(raw)}")
        return None
    rows = _BY_LEVEL[level]
    out: dict[str, object] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            report.error((*path, str(key)), f"keys must be strings, not {describe(key)}",
                         'put it in quotes ("...") so YAML reads it as text')
            continue
        row = rows.get(key)
        if row is None:
            report.error((*path, key), f'unknown key "{key}"', suggest(key, rows))
            continue
        if row.legacy:
            report.warn((*path, key), f'"{key}" has no effect on the appliance (ignored)')
            continue
        if value is None:
            continue
        if not _type_ok(value, row.type):
            report.error((*path, key), f"must be {_TYPE_NAMES[row.type]}, not {describe(value)}")
            continue
        out[key] = value
    for name, row in rows.items():
        if name in out or row.legacy:
            continue
        if row.required:
            if name not in raw:
                report.error((*path, name), f'missing required key "{name}"')
            elif raw[name] is None:
                report.error((*path, name), "must be set")
            continue
        # Copy mutable defaults so callers may not share them by accident.
        d = row.default
        out[name] = list(d) if isinstance(d, list) else dict(d) if isinstance(d, dict) else d
    return out
