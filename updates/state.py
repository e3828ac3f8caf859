"""The updater's small memory on the persistent partition: what was installed last, and which
versions failed to boot (never offered again). One JSON file with a schema number, replaced
atomically (anklume/atomic.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from anklume import atomic
from anklume.errors import PermanentError
from anklume.paths import update_state_file

SCHEMA = 1


@dataclass
class State:
    last_installed: str | None = None
    failed: dict[str, str] = field(default_factory=dict)  # version -> why / when
    # version -> why: installed in the other slot, not booted since `update rollback` left it
    set_aside: dict[str, str] = field(default_factory=dict)

    @property
    def failed_versions(self) -> frozenset[str]:
        return frozenset(self.failed)


def path() -> Path:
    return update_state_file()


def load(p: Path | None = None) -> State:
    p = p or path()
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        return State()
    except (OSError, ValueError) as e:
        raise PermanentError(f"{p}: unreadable update state ({e})",
                             hint="remove the file to forget failed versions") from None
    # Files written before the schema field are schema 1: the same fields.
    schema = doc.get("schema", SCHEMA) if isinstance(doc, dict) else None
    if schema != SCHEMA:
        raise PermanentError(f"{p}: update state schema {schema!r}, this anklume reads {SCHEMA}",
                             hint="a newer anklume wrote it: update anklume, or remove the file "
                                  "to forget failed versions")
    return State(last_installed=doc.get("last_installed"), failed=dict(doc.get("failed", {})),
                 set_aside=dict(doc.get("set_aside", {})))


def save(s: State, p: Path | None = None) -> None:
    atomic.write_text(p or path(), json.dumps(
        {"schema": SCHEMA, "last_installed": s.last_installed, "failed": s.failed,
         "set_aside": s.set_aside}, indent=2, sort_keys=True) + "\n")
