"""This boot's state of the data pool: one key=value file in the run directory.

`anklume firstboot unlock` (and the wizard, for the boot that made the pool) writes it; the
agent reads it before deploying, `anklume firstboot status` shows it, and the console greeting
(a shell script in the image) greps it, hence one plain `key=value` line per field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from anklume import atomic, paths

UNLOCKED, DEGRADED = "unlocked", "degraded"


@dataclass(frozen=True)
class PoolStatus:
    state: str  # UNLOCKED | DEGRADED ("" when a file does not say)
    reason: str = ""
    backend: str = ""
    pool: str = ""
    pool_id: str = ""
    disk: str = ""

    @property
    def unlocked(self) -> bool:
        return self.state == UNLOCKED

    def to_text(self) -> str:
        # One line per field: a reason with line breaks would end its line early.
        return "".join(f"{k}={' '.join(str(v).split())}\n" for k, v in asdict(self).items())


def parse(text: str) -> PoolStatus:
    known = {f.name for f in fields(PoolStatus)}
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return PoolStatus(**{"state": "", **{k: v for k, v in values.items() if k in known}})


def read(path: Path | None = None) -> PoolStatus | None:
    """None when there is no file: nothing has unlocked (or declined) the pool at this boot."""
    try:
        return parse((path or paths.pool_status_file()).read_text())
    except FileNotFoundError:
        return None


def write(status: PoolStatus, path: Path | None = None) -> None:
    atomic.write_text(path or paths.pool_status_file(), status.to_text())
