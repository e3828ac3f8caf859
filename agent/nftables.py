"""nftables isolation between domains: our own `inet anklume` table, replaced atomically.

The firewall is ordinary state (agent/firewall.py's Firewall): `desired(infra)` renders it (pure,
nft_rules), `observe()` reads the live table (`nft -j`, nft_live), firewall.diff compares them and
`write(fw)` makes the live table equal `fw`. The reconcile puts the two into its desired and
observed State and plans the firewall like any other resource; `plan`/`apply` below do the same
for the firewall alone (tests, tools).

- The table is never flushed and refilled: one `nft -f` script declares it, deletes it and
  declares it again with the full contents, and nft commits that as one netlink transaction, so
  there is no moment without isolation and a failing script leaves the old table in place.
- With no enabled domain the desired table is absent, so the live one is deleted: rules never
  outlive the domains they were made for.
- `firewall_mode: vm` (a dedicated firewall VM) is not supported on the appliance yet. We warn
  and enforce the same isolation on the host instead of refusing: failing would leave the domains
  without any filtering, which is worse than filtering in a different place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from anklume import log
from anklume.agent import nft_live, nft_rules
from anklume.agent.firewall import FAMILY, TABLE, Firewall, diff
from anklume.agent.model import Infra

__all__ = ["FAMILY", "TABLE", "Firewall", "NftChange", "apply", "desired", "diff", "observe",
           "plan", "remove", "render", "write"]

_log = log.get("nftables")


def warn_mode(infra: Infra) -> None:
    if infra.settings.firewall_mode == "vm":
        log.event(_log, "firewall_mode vm is not supported yet, filtering on the host",
                  level=logging.WARNING, firewall_mode="vm")


def desired(infra: Infra) -> Firewall:
    """The table this infra declares (absent without an enabled domain)."""
    warn_mode(infra)
    return nft_rules.firewall(infra)


def render(infra: Infra) -> str:
    """The `nft -f` script that makes the desired table (pure)."""
    return nft_rules.render(nft_rules.firewall(infra))


def observe() -> Firewall:
    """The live table (reads the system, changes nothing)."""
    return nft_live.observe()


def write(fw: Firewall) -> None:
    """Make the live table `fw` in one transaction (no flush-then-refill window)."""
    nft_live.load(nft_rules.render(fw))
    log.event(_log, "nftables applied" if fw.present else "nftables removed",
              table=f"{FAMILY} {TABLE}", rules=len(fw.rules))


@dataclass(frozen=True)
class NftChange:
    """The firewall alone: what writing `want` would change; empty means no-op."""
    want: Firewall
    added: tuple[str, ...]  # display lines present in desired, absent live
    removed: tuple[str, ...]  # display lines present live, absent in desired

    @property
    def empty(self) -> bool:
        return not self.added and not self.removed

    @property
    def ruleset(self) -> str:
        return nft_rules.render(self.want)

    def describe(self) -> list[str]:
        """`- old` / `+ new` lines for a dry run; explains itself when there is nothing to do."""
        if self.empty:
            return [f"table {FAMILY} {TABLE}: up to date"]
        return [f"- {line}" for line in self.removed] + [f"+ {line}" for line in self.added]


def plan(infra: Infra) -> NftChange:
    """Compare the desired table with the live one (reads the system, changes nothing)."""
    want = desired(infra)
    added, removed = diff(observe(), want)
    return NftChange(want, added, removed)


def apply(change: NftChange) -> None:
    if not change.empty:
        write(change.want)


def remove() -> None:
    """Delete the table (idempotent): for when no domain remains."""
    nft_live.load(nft_rules.render_removal())
    log.event(_log, "nftables removed", table=f"{FAMILY} {TABLE}")
