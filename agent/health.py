"""The boot health gate (`anklume agent health`): did the OS do its job on this boot?

It passes only when all three hold:
- Incus answers `GET /1.0` (retried until INCUS_TIMEOUT: a busy machine is not a broken one;
  but not when systemd says Incus will not start, e.g. its isolation table did not load);
- the `inet anklume` table is loaded (`nft list table inet anklume` succeeds) - or this boot's
  result explains why there is none: the configuration declares no enabled domain
  (firewall "none"), or it was not applied (invalid, or refused by preflight: "not applied")
  and no earlier firewall was saved;
- the last result exists, is from this boot (its boot_id is the kernel's) and its outcome is
  success, invalid, partial or degraded (the data pool is not unlocked: a mistyped passphrase
  or a missing data disk, never the OS's fault).

A broken infra.yml ("invalid") or one failing instance ("partial") is the user's to fix and
never fails the gate: a user's mistake must not roll the OS back to the other slot. "error"
(the agent could not run, e.g. Incus never came up) or no result from this boot fails it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anklume.agent import incus_service, last_result, nft_live
from anklume.agent.last_result import LastResult
from anklume.errors import AnklumeError

# Seconds Incus has to answer, retried meanwhile. The agent has just talked to Incus, so a
# healthy machine answers at once; this is the patience of a machine under load. A single 10 s
# try failed a healthy boot (its agent succeeded seconds before) on a 2-core host running two
# emulated guests at once, and a failed gate restarts a boot on trial: a slow answer must not
# roll the OS back. A dead or wedged daemon still fails the gate, INCUS_TIMEOUT later.
INCUS_TIMEOUT = 60.0
PASSING = ("success", "invalid", "partial", "degraded")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        detail = " ".join(self.detail.split())  # one line per check, hints included
        return f"{'ok' if self.ok else 'FAIL'}  {self.name}: {detail}"


@dataclass(frozen=True)
class Facts:
    """What the gate looks at, gathered by collect() (or given by a test)."""

    incus_error: str | None  # None: Incus answered
    table: str  # "loaded", "absent", or the error nft gave
    last: LastResult | None
    last_reason: str  # why `last` is None
    boot_id: str | None


def judge(f: Facts) -> list[Check]:
    """The gate's rule (pure)."""
    # The last result if this boot wrote it (None: there is none, or an earlier boot's).
    current = f.last if f.last is not None and f.boot_id is not None \
        and f.last.boot_id == f.boot_id else None
    checks = [Check("incus", f.incus_error is None,
                    "answers /1.0" if f.incus_error is None else f.incus_error)]

    if f.table == "loaded":
        checks.append(Check("firewall", True, "table inet anklume is loaded"))
    elif f.table == "absent" and current is not None and current.firewall == "none":
        checks.append(Check("firewall", True, "no table: the configuration has no enabled "
                                              "domain"))
    elif f.table == "absent" and current is not None and current.firewall == "not applied":
        checks.append(Check("firewall", True, f"no table: the configuration was not applied "
                                              f"(outcome {current.outcome}) and no earlier "
                                              "firewall was saved"))
    elif f.table == "absent":
        checks.append(Check("firewall", False, "table inet anklume is not loaded"))
    else:
        checks.append(Check("firewall", False, f"nft failed: {f.table}"))

    if f.last is None:
        checks.append(Check("last result", False, f.last_reason))
    elif current is None:
        checks.append(Check("last result", False, f"from another boot ({f.last.time}, boot "
                                                  f"{f.last.boot_id}): the agent has not run "
                                                  "on this boot"))
    elif f.last.outcome not in PASSING:
        why = f"; {f.last.errors[0]}" if f.last.errors else ""
        checks.append(Check("last result", False, f"outcome {f.last.outcome}{why}"))
    else:
        checks.append(Check("last result", True, f"outcome {f.last.outcome} at {f.last.time}"))
    return checks


class _Down(Exception):
    """Incus will not come up: waiting longer is pointless (agent/incus_service.py)."""


def _incus_error(timeout: float, incus: Any = None,
                 down: Callable[[], str | None] | None = None) -> str | None:
    # In a thread: a wedged daemon must not hang the gate (the socket has no timeout of its own).
    # Not boot.wait_for_incus: importing the boot run costs the gate seconds under emulation.
    from anklume.agent import retry
    from anklume.agent.incus_api import Incus, IncusError

    out: list[str | None] = [f"no answer within {timeout:g} s"]

    def still_coming(e: BaseException, delay: float) -> None:
        why = (down or incus_service.down_reason)()
        if why is not None:
            raise _Down(why) from e

    def ask() -> None:
        try:  # a new client per try: a missing socket (Incus restarting) is retried too
            retry.retry(lambda: (incus or Incus()).get("/1.0"), deadline_s=timeout,
                        retry_on=(*retry.transient(), IncusError), on_retry=still_coming)
            out[0] = None
        except _Down as e:
            out[0] = str(e)
        except (AnklumeError, OSError) as e:
            out[0] = f"no answer within {timeout:g} s: {e}"

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(timeout + 1.0)  # retry gives up at the deadline; a hung request does not
    return out[0]


def _table() -> str:
    try:
        return "loaded" if nft_live.read_table() is not None else "absent"
    except AnklumeError as e:
        return str(e)


def collect(incus_timeout: float = INCUS_TIMEOUT) -> Facts:
    last, reason = last_result.read()
    return Facts(incus_error=_incus_error(incus_timeout), table=_table(), last=last,
                 last_reason=reason, boot_id=last_result.boot_id())


def passed(checks: list[Check]) -> bool:
    return all(c.ok for c in checks)
