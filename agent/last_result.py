"""The outcome of the agent's last run, in a small versioned JSON file on the persistent
partition: what `anklume status` shows and what the boot health gate reads.

Written atomically (anklume/atomic.py). Reading never raises: a missing, corrupt or foreign
file reads as None together with the reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from anklume import atomic, paths
from anklume import os_release as os_release_mod

SCHEMA = 1
TRIGGERS = ("boot", "path", "cli")
OUTCOMES = ("success", "invalid", "partial", "degraded", "error")
EMBEDDED = "embedded default"
# Whether this run left the `inet anklume` table as the configuration wants it: "applied"
# (loaded and saved), "none" (no enabled domain: no table wanted), "failed", "not applied".
FIREWALL_STATES = ("applied", "none", "failed", "not applied")


@dataclass(frozen=True)
class Counts:
    changes: int = 0
    failed: int = 0
    skipped: int = 0
    conflicts: int = 0
    kept: int = 0


@dataclass(frozen=True)
class LastResult:
    time: str
    boot_id: str | None
    agent_version: str
    image_version: str | None
    trigger: str
    config: str
    outcome: str
    counts: Counts = field(default_factory=Counts)
    errors: tuple[str, ...] = ()
    drift: int = 0  # changes a no-op second apply would have made: those this run applied
    seconds: float = 0.0
    firewall: str = "not applied"
    # The configuration's warnings; `unsafe` those that accept a capability weakening a
    # machine's containment (agent/containment.py), shown first by `anklume status`.
    unsafe: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    schema: int = SCHEMA

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("errors", "unsafe", "warnings"):
            d[k] = list(d[k])
        return json.dumps({"schema": self.schema, **{k: v for k, v in d.items()
                                                      if k != "schema"}}, indent=2) + "\n"


def boot_id(path: Path = Path("/proc/sys/kernel/random/boot_id")) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def image_version(os_release: Path = Path("/etc/os-release")) -> str | None:
    """IMAGE_VERSION from os-release: set on the appliance image, absent on a dev host."""
    return os_release_mod.image_version(os_release)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write(result: LastResult, path: Path | None = None) -> None:
    atomic.write_text(path or paths.last_result_file(), result.to_json())


def _parse(d: object) -> LastResult:
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    if d.get("schema") != SCHEMA:
        raise ValueError(f"schema {d.get('schema')!r}, this agent reads schema {SCHEMA}")
    c = d.get("counts") or {}
    if not isinstance(c, dict):
        raise ValueError("counts is not an object")
    lists = {k: d.get(k) or [] for k in ("errors", "unsafe", "warnings")}
    for k, v in lists.items():
        if not isinstance(v, list):
            raise ValueError(f"{k} is not a list")
    outcome = d["outcome"]
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    return LastResult(
        time=str(d["time"]), boot_id=d.get("boot_id"), agent_version=str(d["agent_version"]),
        image_version=d.get("image_version"), trigger=str(d["trigger"]),
        config=str(d["config"]), outcome=outcome,
        counts=Counts(**{k: int(c.get(k, 0)) for k in Counts.__dataclass_fields__}),
        errors=tuple(str(e) for e in lists["errors"]), drift=int(d.get("drift", 0)),
        seconds=float(d.get("seconds", 0.0)), firewall=str(d.get("firewall", "not applied")),
        unsafe=tuple(str(e) for e in lists["unsafe"]),
        warnings=tuple(str(e) for e in lists["warnings"]))


def read(path: Path | None = None) -> tuple[LastResult | None, str]:
    """(result, "") or (None, why there is none)."""
    path = path or paths.last_result_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{path} does not exist: the agent has not run yet"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot read {path}: {e}"
    try:
        return _parse(json.loads(text)), ""
    except (ValueError, KeyError, TypeError) as e:
        return None, f"{path} is unreadable ({e.__class__.__name__}: {e})"
