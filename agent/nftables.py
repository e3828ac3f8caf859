"""nftables isolation between domains: our own `inet anklume` table, replaced atomically.

Interface used by the planner (agent/plan*.py); implementation owned by the nftables work.
"""

from __future__ import annotations

from dataclasses import dataclass

from anklume.agent.model import Infra

TABLE = "anklume"


@dataclass(frozen=True)
class NftChange:
    """What applying the desired ruleset would change; empty `added`/`removed` means no-op."""
    ruleset: str  # the full `nft -f` script that replaces the table in one transaction
    added: tuple[str, ...]  # rule lines present in desired, absent live
    removed: tuple[str, ...]  # rule lines present live, absent in desired

    @property
    def empty(self) -> bool:
        return not self.added and not self.removed


def render(infra: Infra) -> str:
    """The whole `inet anklume` table for this infra, as an `nft -f` script (pure)."""
    raise NotImplementedError


def plan(infra: Infra) -> NftChange:
    """Compare the desired table with the live one (reads the system, changes nothing)."""
    raise NotImplementedError


def apply(change: NftChange) -> None:
    """Replace the table in one transaction (no flush-then-refill window)."""
    raise NotImplementedError
