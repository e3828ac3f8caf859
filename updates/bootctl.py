"""Boot entries from `bootctl list --json=short`, and making another one the default."""

from __future__ import annotations

import json

from anklume.updates.policy import BootEntry
from anklume.updates.runner import Runner, system

from anklume.errors import CommandError, PermanentError


def parse(text: str) -> list[BootEntry]:
    out = []
    for e in json.loads(text or "[]"):
        out.append(BootEntry(
            id=e.get("id", ""), version=e.get("version"),
            tries_left=e.get("triesLeft"), tries_done=e.get("triesDone"),
            is_default=bool(e.get("isDefault")), is_selected=bool(e.get("isSelected")),
        ))
    return out


def entries(runner: Runner = system) -> list[BootEntry]:
    cmd = ["bootctl", "list", "--json=short", "--no-pager"]
    proc = runner(cmd)
    if proc.returncode != 0:
        raise CommandError(cmd, proc.returncode, str(proc.stderr or ""))
    return parse(proc.stdout)


def rollback_target(es: list[BootEntry], running: str) -> BootEntry:
    """The other anklume entry to make default: not the running version, not one that
    systemd-boot already gave up on (no tries left)."""
    others = [e for e in es if e.id.startswith("anklume_") and e.version
              and e.version != running]
    usable = [e for e in others if e.tries_left != 0]
    if not usable:
        seen = ", ".join(f"{e.id} (tries left {e.tries_left})" for e in others) or "none"
        raise PermanentError(f"no other bootable anklume entry to roll back to (others: {seen})")
    from anklume.updates import versions

    # With more than one candidate, the newest of them: the one just before or after ours.
    return max(usable, key=lambda e: versions.key(e.version) if versions.valid(e.version)
               else (-1,))


def set_default(entry_id: str, runner: Runner = system) -> None:
    cmd = ["bootctl", "set-default", entry_id]
    proc = runner(cmd)
    if proc.returncode != 0:
        raise CommandError(cmd, proc.returncode, str(proc.stderr or ""))
