"""One reconcile: read Incus, compute the desired state, plan, and (unless dry) apply."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from anklume import log
from anklume.agent import images, nftables, preflight
from anklume.agent.apply import Result, apply
from anklume.agent.desired import desired
from anklume.agent.incus_api import Incus, IncusError
from anklume.agent.incus_state import observe
from anklume.agent.model import Infra
from anklume.agent.plan import Plan, plan

_log = log.get("reconcile")
SETTLE_TIMEOUT = 60  # seconds to wait for Incus operations a killed run left in flight


@dataclass(frozen=True)
class Report:
    plan: Plan
    result: Result | None  # None: dry run, or refused by a preflight problem
    seconds: float
    problems: tuple[str, ...] = ()  # preflight: why nothing was applied

    @property
    def ok(self) -> bool:
        return not self.problems and not self.plan.conflicts and (self.result is None or not (
            self.result.failed or self.result.skipped))


def settle(incus: Incus) -> None:
    """Wait for running Incus tasks (e.g. an instance creation whose client was killed):
    planning while they run would see half-made resources and trip over them."""
    try:
        ops = incus.get("/1.0/operations", params={"recursion": "1", "all-projects": "true"})
    except IncusError:
        return
    for op in (ops or {}).get("running", []) or []:
        if op.get("class") != "task" or not (op.get("resources") or {}).get("instances"):
            continue
        # A failed or vanished operation is no longer running either: that is all we need.
        with contextlib.suppress(IncusError):
            incus.get(f"/1.0/operations/{op['id']}/wait", params={"timeout": str(SETTLE_TIMEOUT)})


def reconcile(infra: Infra, *, prune: bool = False, force: bool = False, dry_run: bool = False,
              default_image: str | None = None, incus: Incus | None = None,
              firewall: bool = True, recreate: bool = False,
              on_plan: Callable[[Plan], None] | None = None) -> Report:
    """`on_plan` sees the plan before it is applied (the boot unit's status line)."""
    t0 = time.monotonic()
    incus = incus or Incus()
    settle(incus)
    # Shipped images stand in for the names they serve (offline first deploy); importing one
    # is an action of the plan.
    want = images.with_shipped(desired(infra, default_image=default_image), images.catalog())
    have = observe(incus)
    if firewall:
        nftables.warn_mode(infra)
        have = replace(have, firewall=nftables.observe())
    else:
        want = replace(want, firewall=None)  # the live table is left as it is
    p = plan(want, have, prune=prune, force=force, recreate=recreate)
    roots = (infra.settings.persistent_data_base, infra.settings.shared_volumes_base)
    problems = tuple(preflight.check(want, incus, roots=roots))
    for msg in problems:
        log.event(_log, "Cannot apply", logging.ERROR, reason=msg)
    for c in p.conflicts:
        log.event(_log, "Cannot reconcile", logging.ERROR, resource=c.label, reason=c.reason)
    for k in p.kept:
        log.event(_log, "Left as is", logging.WARNING, resource=k.label, reason=k.reason)
    if on_plan is not None:
        on_plan(p)
    result = None if dry_run or problems else apply(p, incus)
    dt = time.monotonic() - t0
    changes = len(p) if result is None else len(result.done)
    log.event(_log, "Reconcile done", changes=changes, dry_run=str(dry_run).lower(),
              failed=0 if result is None else len(result.failed) + len(p.conflicts),
              kept=len(p.kept), duration_ms=int(dt * 1000))
    return Report(p, result, dt, problems)
