"""Boot entries from `bootctl list --json=short` (rollback.py changes which one boots)."""

from __future__ import annotations

import json

from anklume.errors import CommandError
from anklume.updates.policy import BootEntry
from anklume.updates.runner import Runner, system


def parse(text: str) -> list[BootEntry]:
    out = []
    for e in json.loads(text or "[]"):
        out.append(BootEntry(
            id=e.get("id", ""), version=e.get("version"),
            tries_left=e.get("triesLeft"), tries_done=e.get("triesDone"),
            is_default=bool(e.get("isDefault")), is_selected=bool(e.get("isSelected")),
            path=e.get("path"),
        ))
    return out


def entries(runner: Runner = system) -> list[BootEntry]:
    cmd = ["bootctl", "list", "--json=short", "--no-pager"]
    proc = runner(cmd)
    if proc.returncode != 0:
        raise CommandError(cmd, proc.returncode, str(proc.stderr or ""))
    return parse(proc.stdout)
