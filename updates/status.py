"""What `anklume update status` reports, gathered from the running system (small readers) and
combined by pure functions that tests call with recorded inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anklume import os_release
from anklume.updates import policy, versions
from anklume.updates.policy import BootEntry
from anklume.updates.rollback import Uki, ukis
from anklume.updates.slot import Slot
from anklume.updates.state import State

OS_RELEASE = Path("/usr/lib/os-release")


def os_release_version(text: str) -> str | None:
    return os_release.image_version_of(text)


def running_version(path: Path = OS_RELEASE) -> str:
    from anklume.errors import PermanentError

    try:
        v = os_release_version(path.read_text())
    except OSError as e:
        raise PermanentError(f"{path}: {e}") from None
    if not v:
        raise PermanentError(f"{path}: no IMAGE_VERSION (not an anklume appliance image?)")
    return v


@dataclass(frozen=True)
class Report:
    running: str
    entries: list[BootEntry]
    pending: list[BootEntry]  # newer entries not yet booted to good (they have tries left)
    fell_back_from: str | None
    failed: list[str]
    slot: Slot | None = None  # the /usr slot this boot runs from (None: unknown)
    set_aside: frozenset[str] = frozenset()


def report(running: str, entries: list[BootEntry], st: State,
           slot: Slot | None = None) -> Report:
    pending = [e for e in entries if e.version and versions.valid(e.version)
               and versions.newer(e.version, running) and (e.tries_left or 0) > 0]
    return Report(running=running, entries=entries, pending=pending,
                  fell_back_from=policy.fallback_from(running, st.last_installed, entries,
                                                      frozenset(st.set_aside)),
                  failed=sorted(st.failed, key=versions.key), slot=slot,
                  set_aside=frozenset(st.set_aside))


def record_fallback(st: State, r: Report) -> bool:
    """Remember a version that failed to boot; True when the state changed."""
    v = r.fell_back_from
    if v is None or v in st.failed:
        return False
    st.failed[v] = f"fell back to {r.running} after its boot tries ran out"
    return True


def state_of(u: Uki, r: Report) -> str:
    """One installed version's state, in words."""
    if u.version == r.running:
        if u.tries_left:
            return f"running, on trial ({u.tries_left} tries left after this one)"
        return "running, blessed" if u.tries_left is None else "running (chosen in the boot menu)"
    if u.tries_left:
        return f"installed, boots next on trial ({u.tries_left} tries)"
    if u.tries_left == 0 and u.version in r.set_aside:
        return "set aside by `anklume update rollback` (rollback boots it again)"
    if u.tries_left == 0 or u.version in r.failed:
        return "failed to boot (systemd-boot fell back)"
    return "the previous version (`anklume update rollback` boots it)"


def lines(r: Report) -> list[str]:
    where = ("" if r.slot is None else " (from RAM)" if r.slot.name == "RAM"
             else f" (slot {r.slot.name}, {r.slot.device})")
    us = ukis(r.entries)
    ours = next((u for u in us if u.version == r.running), None)
    out = [f"running: {r.running}{where}"
           + (f", {state_of(ours, r).removeprefix('running, ')}"
              if ours and ours.tries_left is None else "")]
    nxt = next((u for u in us if u.default), None)
    out.append(f"next boot: {nxt.version}" if nxt
               else "next boot: not an anklume version (see `bootctl list`)")
    out.append("installed:")
    for u in us:
        slot = "this slot" if u.version == r.running else "other slot"
        out.append(f"  {u.version:12} {slot:11} {state_of(u, r)}")
    if r.pending:
        out.append("pending: " + ", ".join(e.version or e.id for e in r.pending)
                   + " (boots next; counts as good once the health gate passes)")
    if r.fell_back_from:
        out.append(f"last boot fell back from {r.fell_back_from} to {r.running}")
    if r.failed:
        out.append("not offered again (failed to boot): " + ", ".join(r.failed))
    return out
