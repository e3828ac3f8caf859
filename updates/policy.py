"""Which version may be installed, and which boot counts as a fallback: pure rules.

- An update must be newer than the running version; `allow_downgrade` lifts only that rule
  (every signature is still checked). Reinstalling the running version is never useful:
  systemd-sysupdate protects it (`ProtectVersion=%A`).
- The running version must be at least the update's `min_version` (it may rely on a migration
  that version brought); this cannot be overridden.
- A version that failed to boot is not offered again: only a different (newer) one is.
- A version that `update rollback` set aside is still installed in the other slot: rollback
  boots it again; installing it anew is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from anklume.updates import versions
from anklume.updates.errors import VersionRefused


def check(
    candidate: str, min_version: str | None, running: str, *,
    allow_downgrade: bool = False, failed: frozenset[str] | set[str] = frozenset(),
    set_aside: frozenset[str] | set[str] = frozenset(),
) -> None:
    if min_version is not None and versions.newer(min_version, running):
        raise VersionRefused(
            f"{candidate} updates only from {min_version} or later; this system runs {running}",
            hint=f"install {min_version} (or a version between) first")
    if versions.key(candidate) == versions.key(running):
        raise VersionRefused(f"{candidate} is the running version")
    if not versions.newer(candidate, running) and not allow_downgrade:
        raise VersionRefused(
            f"{candidate} is older than the running version {running}",
            hint="--allow-downgrade installs it (all signatures are still required)")
    if candidate in failed:
        raise VersionRefused(
            f"{candidate} failed to boot on this machine before and is not offered again",
            hint="wait for a newer version")
    if candidate in set_aside:
        raise VersionRefused(
            f"{candidate} is installed in the other slot (set aside by `anklume update "
            "rollback`)", hint="`anklume update rollback` boots it again")


@dataclass(frozen=True)
class BootEntry:
    """What status needs from one `bootctl list --json=short` entry."""
    id: str
    version: str | None
    tries_left: int | None
    tries_done: int | None
    is_default: bool
    is_selected: bool
    path: str | None = None  # the file on the ESP (None: only reported by the boot loader)


def fallback_from(running: str, last_installed: str | None, entries: list[BootEntry],
                  set_aside: frozenset[str] | set[str] = frozenset()) -> str | None:
    """The version this boot fell back from, if any: the last installed one is newer than the
    running one and its entry has no tries left (systemd-boot gave up on it). A deliberate
    `update rollback` also leaves the newer entry with no tries left, but records the version
    as set aside: not a failure."""
    if last_installed is None or not versions.valid(last_installed):
        return None
    if last_installed in set_aside:
        return None
    if not versions.newer(last_installed, running):
        return None
    for e in entries:
        if e.version == last_installed and e.tries_left == 0:
            return last_installed
    return None
