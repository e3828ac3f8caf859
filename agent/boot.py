"""The boot reconcile (`anklume agent boot`): make the machine match the saved infra.yml.

Run by the image's units at every boot (trigger "boot") and when the configuration changes
(trigger "path"). In order: take the apply lock, wait for Incus, make sure the storage pool
exists, validate the configuration, reconcile, save the live firewall, record the last result.

- A broken configuration is the user's to fix: it is reported (journal + last result
  "invalid") and never retried. One failing resource is not retried either ("partial"): the
  next reconcile plans from what is really there.
- What may go away by itself (Incus still starting, busy, restarting) is retried with backoff
  until a deadline; Incus that never answers is an "error": the OS did not do its job.
- Never prunes unless the configuration asks for it (`global.prune_at_boot`): a boot must not
  delete what the user made while a configuration was, say, half-edited.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anklume import __version__, atomic, exitcodes, log, paths, pool_status
from anklume.agent import (
    containment,
    incus_service,
    last_result,
    lock,
    nft_live,
    retry,
    sdnotify,
)
from anklume.agent.incus_api import Incus, IncusError
from anklume.agent.last_result import Counts, LastResult
from anklume.agent.model import Infra
from anklume.agent.nft_rules import FAMILY, TABLE
from anklume.agent.resources import Kind
from anklume.errors import AnklumeError

if TYPE_CHECKING:  # imported when a reconcile runs: the gate's import of this module stays light
    from anklume.agent.apply import Outcome
    from anklume.agent.reconcile import Report

_log = log.get("boot")

# Its exit statuses (anklume/exitcodes.py): partial = some resource failed, or the agent
# itself (see the last result); invalid = nothing was changed; unreachable = Incus never answered.
EXIT_OK = exitcodes.OK
EXIT_PARTIAL = exitcodes.FAILED
EXIT_INVALID = exitcodes.INVALID
EXIT_UNREACHABLE = exitcodes.TEMPFAIL

INCUS_TIMEOUT = 120.0  # seconds to wait for Incus to answer at boot
RETRY_TIMEOUT = 300.0  # seconds to keep retrying a reconcile interrupted by temporary errors
POOL = "default"


class IncusUnreachable(AnklumeError):
    exit_code = EXIT_UNREACHABLE


@dataclass
class Run:
    """What one boot run found, turned into the last result at the end."""

    trigger: str
    config: str = last_result.EMBEDDED
    outcome: str = "error"
    counts: Counts = field(default_factory=Counts)
    errors: list[str] = field(default_factory=list)
    drift: int = 0
    firewall: str = "not applied"
    unsafe: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def result(self) -> LastResult:
        return LastResult(
            time=last_result.now(), boot_id=last_result.boot_id(), agent_version=__version__,
            image_version=last_result.image_version(), trigger=self.trigger,
            config=self.config, outcome=self.outcome, counts=self.counts,
            errors=tuple(self.errors), drift=self.drift,
            seconds=round(time.monotonic() - self.t0, 3), firewall=self.firewall,
            unsafe=tuple(self.unsafe), warnings=tuple(self.warnings))


def wait_for_incus(incus: Incus, timeout: float, *, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic,
                   down: Callable[[], str | None] | None = None) -> Any:
    """Poll /1.0 until Incus answers; IncusUnreachable with the last error after `timeout`,
    or at once when systemd says Incus will not start. An error answer counts as "not yet"
    too: a starting daemon refuses requests for a while."""
    def retried(e: BaseException, delay: float) -> None:
        why = (down or incus_service.down_reason)()
        if why is not None:
            raise IncusUnreachable(why) from e
        log.event(_log, "Incus not answering yet", logging.DEBUG, error=str(e), retry_in=delay)

    kinds: tuple[type[BaseException], ...] = (*retry.transient(), IncusError)
    try:
        return retry.retry(lambda: incus.get("/1.0"), deadline_s=timeout, retry_on=kinds,
                           on_retry=retried, sleep=sleep, clock=clock)
    except kinds as e:
        raise IncusUnreachable(f"Incus did not answer within {timeout:g} s: {e}") from e


def live_pool(free_bytes: int) -> dict[str, Any]:
    """The `default` pool while Incus keeps its state in RAM (no data pool yet): btrfs on a
    sparse file that Incus makes itself under /var/lib/incus (a tmpfs here). A dir pool unpacks
    the whole image into every instance; btrfs unpacks it once and makes each instance a
    snapshot of it, as the encrypted pools do (bench/live-pool measures both). Its size is the room
    left on that tmpfs, so btrfs is not promised space that the RAM behind it cannot hold."""
    mib = max(free_bytes // 2**20, 256)  # btrfs needs ~114 MiB of its own
    return {"name": POOL, "driver": "btrfs", "config": {"size": f"{mib}MiB"},
            "description": "made by the anklume agent until a data pool exists (in RAM)"}


def ensure_pool(incus: Incus, incus_dir: Path = Path(paths.INCUS_DIR)) -> bool:
    """Create the `default` storage pool (live_pool(), or a dir pool where btrfs cannot be
    made) when Incus has none by that name; an existing pool is never touched. True when it was
    created. Until the encrypted data pool exists Incus keeps its state in RAM, so this happens
    at every such boot."""
    names = {u.rstrip("/").rsplit("/", 1)[-1] for u in incus.get("/1.0/storage-pools") or []}
    if POOL in names:
        return False
    st = os.statvfs(incus_dir) if incus_dir.is_dir() else None
    body = live_pool(st.f_bavail * st.f_frsize if st else 0)
    try:
        incus.request("POST", "/1.0/storage-pools", body=body)
    except IncusError as e:
        # Without btrfs or loop devices the deploy still works, only slower: say so, go on.
        log.event(_log, "Storage pool not made with btrfs, using dir", logging.WARNING,
                  pool=POOL, error=str(e))
        body = {"name": POOL, "driver": "dir",
                "description": "made by the anklume agent until a data pool exists"}
        incus.request("POST", "/1.0/storage-pools", body=body)
    log.event(_log, "Storage pool created", pool=POOL, driver=body["driver"],
              size=body.get("config", {}).get("size", "-"))
    return True


def data_pool_problem() -> str | None:
    """Why nothing may be deployed at this boot: the first-boot wizard made an encrypted data
    pool that holds Incus's state, and it is not unlocked now (a wrong passphrase, a missing
    disk). Deploying would put the compartments into RAM instead; they stay as they are on the
    pool until it is unlocked. None when there is no pool (live mode) or it is unlocked."""
    if not paths.firstboot_record().is_file():
        return None
    status = pool_status.read()
    if status is None:
        return (f"the data pool was not unlocked at this boot (no {paths.pool_status_file()}); "
                "reboot to unlock it")
    if status.unlocked:
        return None
    return (f"the data pool is {status.state or 'in an unknown state'}: {status.reason}; "
            "reboot to unlock it")


def firewall_script(live: str | None) -> str:
    """An `nft -f` file that replaces whatever `inet anklume` table is loaded with `live`
    (None: leaves no table). Declaring the table first makes the delete valid when none is
    loaded yet; nft commits the whole file as one transaction."""
    head = f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n"
    if live is None:
        return head
    return head + live + ("" if live.endswith("\n") else "\n")


def save_firewall(path: Path | None = None) -> str:
    """Write the live table to paths.firewall_file(); "applied" or "none" (no table)."""
    live = nft_live.read_table()
    atomic.write_text(path or paths.firewall_file(), firewall_script(live))
    return "applied" if live is not None else "none"


def _firewall_ok(report: Report) -> bool:
    """True unless this run's firewall action failed or was skipped."""
    assert report.result is not None
    return not any(o.action.kind is Kind.FIREWALL and not o.ok for o in report.result.outcomes)


def _note(o: Outcome) -> str:
    return f"{o.action.op.value} {o.action.label}: {o.error or o.skipped}"


def record_report(run: Run, report: Report) -> int:
    """Outcome, counts and errors of a finished reconcile; returns the exit status. A
    reconcile that refused to apply anything (preflight problems: the configuration does not
    fit this system) is "partial" too: the user's to fix, like a failing resource."""
    r = report.result
    done, failed, skipped = (r.done, r.failed, r.skipped) if r is not None else ([], [], [])
    run.counts = Counts(changes=len(done), failed=len(failed), skipped=len(skipped),
                        conflicts=len(report.plan.conflicts), kept=len(report.plan.kept))
    run.drift = len(done)
    run.errors = [*getattr(report, "problems", ()), *(_note(o) for o in failed),
                  *(_note(o) for o in skipped),
                  *(f"{n.label}: {n.reason}" for n in report.plan.conflicts)]
    run.outcome = "success" if report.ok else "partial"
    return EXIT_OK if report.ok else EXIT_PARTIAL


def _restore_saved_firewall() -> None:
    # When the configuration is not applied (invalid, or refused): keep the isolation of the
    # last good run rather than none (a unit may have loaded it already: then a no-op).
    f = paths.firewall_file()
    try:
        if nft_live.read_table() is None and f.is_file():
            nft_live.load(f.read_text())
            log.event(_log, "Saved firewall restored", file=str(f))
    except (AnklumeError, OSError) as e:
        log.event(_log, "Saved firewall not restored", logging.ERROR, file=str(f), error=str(e))


def _reconcile_step(run: Run, infra: Infra, incus: Incus, retry_timeout: float,
                    sleep: Callable[[float], None]) -> int:
    from anklume.agent.reconcile import reconcile

    prune = infra.settings.prune_at_boot

    def retried(e: BaseException, delay: float) -> None:
        log.event(_log, "Reconcile interrupted, retrying", logging.WARNING, error=str(e),
                  retry_in=delay)
        sdnotify.status(f"retrying in {delay:g} s: {e}")

    def attempt() -> Report:
        # One plan, applied as planned (shipped image imports included); the status line
        # says its size before the work starts.
        return reconcile(infra, prune=prune, incus=incus, on_plan=lambda p: sdnotify.status(
            f"applying {len(p)} changes"))

    try:
        report = retry.retry(attempt, deadline_s=retry_timeout, on_retry=retried, sleep=sleep)
    except retry.transient() as e:
        run.errors.append(f"Incus stopped answering: {e}")
        return EXIT_UNREACHABLE
    code = record_report(run, report)
    if report.result is None:  # refused before applying: keep the last good isolation
        _restore_saved_firewall()
    elif _firewall_ok(report):
        try:
            run.firewall = save_firewall()
        except (AnklumeError, OSError) as e:
            run.firewall = "failed"
            run.errors.append(f"firewall not saved to {paths.firewall_file()}: {e}")
    else:
        run.firewall = "failed"
    return code


def _run(run: Run, incus: Incus, incus_timeout: float, retry_timeout: float,
         sleep: Callable[[float], None]) -> int:
    from anklume.agent.validate import ValidationError, load_with_warnings

    sdnotify.status("waiting for Incus")
    try:
        wait_for_incus(incus, incus_timeout, sleep=sleep)
    except IncusUnreachable as e:
        run.errors.append(str(e))
        log.event(_log, "Incus unreachable", logging.ERROR, timeout_s=incus_timeout,
                  error=str(e))
        return EXIT_UNREACHABLE
    problem = data_pool_problem()
    if problem is not None:
        # Not the OS's failure: the gate passes "degraded" (docs/health-gate.md).
        run.outcome = "degraded"
        run.errors = [problem]
        log.event(_log, "Data pool not unlocked: nothing deployed", logging.WARNING,
                  problem=problem)
        _restore_saved_firewall()
        return EXIT_PARTIAL
    ensure_pool(incus)

    config = paths.user_config()
    run.config = str(config) if config is not None else last_result.EMBEDDED
    sdnotify.status(f"validating {run.config}")
    try:
        infra, warnings = load_with_warnings(config)
    except ValidationError as e:
        run.outcome = "invalid"
        run.errors = [str(p) for p in e.problems]
        for p in e.problems:
            log.event(_log, "Configuration problem", logging.ERROR, config=run.config,
                      problem=str(p))
        _restore_saved_firewall()
        return EXIT_INVALID
    for w in warnings:
        log.event(_log, "Configuration warning", logging.WARNING, config=run.config,
                  warning=str(w))
        (run.unsafe if w.tag == containment.UNSAFE else run.warnings).append(str(w))
    return _reconcile_step(run, infra, incus, retry_timeout, sleep)


def boot(trigger: str = "boot", *, incus_timeout: float = INCUS_TIMEOUT,
         retry_timeout: float = RETRY_TIMEOUT, incus: Incus | None = None,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """One boot reconcile under the apply lock; always records the last result. Returns the
    exit status (EXIT_*)."""
    def waiting(h: lock.Holder) -> None:
        log.event(_log, "Waiting for the apply lock", holder=h.describe())
        sdnotify.status(f"waiting for {h.describe()}")

    with lock.apply_lock(f"anklume agent boot --trigger {trigger}", on_wait=waiting):
        run = Run(trigger)
        try:
            code = _run(run, incus or Incus(), incus_timeout, retry_timeout, sleep)
        except BaseException as e:
            run.outcome, code = "error", EXIT_PARTIAL
            run.errors.append(f"{e.__class__.__name__}: {e}")
            _finish(run, code)
            raise
        if code == EXIT_UNREACHABLE:
            run.outcome = "error"
        _finish(run, code)
        return code


def _finish(run: Run, code: int) -> None:
    result = run.result()
    try:
        last_result.write(result)
    except OSError as e:
        log.event(_log, "Last result not written", logging.ERROR,
                  file=str(paths.last_result_file()), error=str(e))
    c = result.counts
    summary = (f"{result.outcome}: {c.changes} changes, {c.failed} failed, {c.skipped} skipped, "
               f"{c.conflicts} conflicts")
    sdnotify.status(f"done: {summary}")
    log.event(_log, "Boot reconcile done", logging.INFO if code == EXIT_OK else logging.ERROR,
              outcome=result.outcome, trigger=result.trigger, config=result.config,
              changes=c.changes, failed=c.failed, skipped=c.skipped, conflicts=c.conflicts,
              firewall=result.firewall, exit=code, duration_ms=int(result.seconds * 1000))
