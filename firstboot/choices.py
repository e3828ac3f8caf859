"""The first boot's choices on the persistent partition (versioned JSON, written atomically).

Its presence with done=true is the marker that the wizard finished: later boots unlock the
pool it points at (by stable id only), and the wizard never runs twice by itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from anklume import atomic, exitcodes, paths
from anklume.errors import PermanentError

FORMAT = "anklume-firstboot"
VERSION = 1


class ChoicesError(PermanentError):
    exit_code = exitcodes.INVALID


@dataclass(frozen=True)
class Choices:
    backend: str  # zfs | luks-btrfs
    pool_name: str
    disk_by_id: str
    zpool_guid: str | None = None
    luks_uuid: str | None = None
    btrfs_uuid: str | None = None
    tpm2: bool = False
    gpu_models: tuple[str, ...] = ()
    gpu_reason: str = ""
    created_at: str = ""  # UTC ISO 8601
    action: str = "create"
    done: bool = False


def dumps(c: Choices) -> str:
    return json.dumps({"format": FORMAT, "version": VERSION, **asdict(c)}, indent=2) + "\n"


def save(c: Choices, path: Path | None = None) -> None:
    atomic.write_text(path or paths.firstboot_record(), dumps(c), mode=0o600)


def loads(text: str, where: str) -> Choices:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ChoicesError(f"{where}: corrupted (not JSON: {e.msg} at line {e.lineno})",
                           hint="restore it from the pool's copy or run "
                                "`anklume firstboot run` to import the pool again") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ChoicesError(f"{where}: not an anklume first-boot file (format "
                           f"{doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("version") != VERSION:
        raise ChoicesError(f"{where}: version {doc.get('version')!r}, this anklume reads "
                           f"version {VERSION}", hint="update anklume")
    known = {f.name for f in fields(Choices)}
    body = {k: v for k, v in doc.items() if k in known}
    try:
        c = Choices(**body)
    except TypeError as e:
        raise ChoicesError(f"{where}: missing fields ({e})") from None
    c = Choices(**{**asdict(c), "gpu_models": tuple(c.gpu_models)})
    if c.backend not in ("zfs", "luks-btrfs"):
        raise ChoicesError(f"{where}: unknown backend {c.backend!r}")
    if not (c.zpool_guid if c.backend == "zfs" else c.luks_uuid):
        raise ChoicesError(f"{where}: no stable pool id for backend {c.backend}")
    return c


def load(path: Path | None = None) -> Choices | None:
    """None when the wizard never finished (no file)."""
    path = path or paths.firstboot_record()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return loads(text, str(path))
