"""The updater's small memory on the persistent partition: what was installed last, and which
versions failed to boot (never offered again). One JSON file, replaced atomically."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from anklume.errors import PermanentError
from anklume.paths import update_state_file


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
    return State(last_installed=doc.get("last_installed"), failed=dict(doc.get("failed", {})),
                 set_aside=dict(doc.get("set_aside", {})))


def save(s: State, p: Path | None = None) -> None:
    p = p or path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps({"last_installed": s.last_installed, "failed": s.failed,
                               "set_aside": s.set_aside},
                              indent=2, sort_keys=True) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, p)
