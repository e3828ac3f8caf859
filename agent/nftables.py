"""nftables isolation between domains: our own `inet anklume` table, replaced atomically.

Interface used by the planner (agent/plan*.py): `plan(infra) -> NftChange` reads the live table
and says what would change; `apply(change)` commits it in one transaction. Rendering lives in
nft_rules (pure), kernel I/O in nft_live.

- The table is never flushed and refilled: one `nft -f` script declares it, deletes it and
  declares it again with the full contents, and nft commits that as one netlink transaction, so
  there is no moment without isolation and a failing script leaves the old table in place.
- With no enabled domain the table is deleted (plan() returns the removal): rules never outlive
  the domains they were made for.
- `firewall_mode: vm` (a dedicated firewall VM) is not supported on the appliance yet. We warn
  and enforce the same isolation on the host instead of refusing: failing would leave the domains
  without any filtering, which is worse than filtering in a different place.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass

from anklume.agent import nft_live
from anklume.agent.model import Infra
from anklume.agent.nft_rules import (
    FAMILY,
    TABLE,
    desired_rules,
    render_removal,
    render_rules,
    table_lines,
)

from anklume import log

__all__ = ["FAMILY", "TABLE", "NftChange", "apply", "diff", "plan", "remove", "render"]

_log = log.get("nftables")


@dataclass(frozen=True)
class NftChange:
    """What applying the desired ruleset would change; empty `added`/`removed` means no-op."""
    ruleset: str  # the full `nft -f` script that replaces the table in one transaction
    added: tuple[str, ...]  # rule lines present in desired, absent live
    removed: tuple[str, ...]  # rule lines present live, absent in desired

    @property
    def empty(self) -> bool:
        return not self.added and not self.removed

    def describe(self) -> list[str]:
        """`- old` / `+ new` lines for a dry run; explains itself when there is nothing to do."""
        if self.empty:
            return [f"table {FAMILY} {TABLE}: up to date"]
        return [f"- {line}" for line in self.removed] + [f"+ {line}" for line in self.added]


def render(infra: Infra) -> str:
    """The whole `inet anklume` table for this infra, as an `nft -f` script (pure)."""
    return render_rules(desired_rules(infra))


def diff(live: list[str], desired: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(added, removed), order-sensitive: rules evaluate top-down, so a move is a change."""
    added: list[str] = []
    removed: list[str] = []
    sm = difflib.SequenceMatcher(None, live, desired, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op in ("replace", "delete"):
            removed.extend(live[i1:i2])
        if op in ("replace", "insert"):
            added.extend(desired[j1:j2])
    return tuple(added), tuple(removed)


def plan(infra: Infra) -> NftChange:
    """Compare the desired table with the live one (reads the system, changes nothing)."""
    live_text = nft_live.read_table()
    live = table_lines(live_text) if live_text is not None else []
    if not infra.enabled_domains:
        return NftChange(ruleset=render_removal(), added=(), removed=tuple(live))
    if infra.settings.firewall_mode == "vm":
        log.event(_log, "firewall_mode vm is not supported yet, filtering on the host",
                  level=logging.WARNING, firewall_mode="vm")
    script = render(infra)
    added, removed = diff(live, table_lines(script))
    return NftChange(ruleset=script, added=added, removed=removed)


def apply(change: NftChange) -> None:
    """Replace the table in one transaction (no flush-then-refill window)."""
    if change.empty:
        return
    nft_live.load(change.ruleset)
    log.event(_log, "nftables applied", table=f"{FAMILY} {TABLE}",
              added=len(change.added), removed=len(change.removed))


def remove() -> None:
    """Delete the table (idempotent): for when no domain remains."""
    nft_live.load(render_removal())
    log.event(_log, "nftables removed", table=f"{FAMILY} {TABLE}")
