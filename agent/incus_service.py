"""Whether Incus can still come up on this machine, as systemd sees it.

A wait for Incus to answer (the agent's, the health gate's) is patience with a busy machine.
When neither Incus's socket nor its daemon is active or starting, nothing will ever answer:
a dependency failed (the isolation table did not load: anklume-firewall.service), or the
daemon died. Both waits then end at once with that reason instead of running out their clock.
Both run after Incus's start jobs are done (their units order after incus.service and
incus.socket), so "inactive" there means "not coming", not "not yet".
"""

from __future__ import annotations

import subprocess

from anklume.run import run

UNITS = ("incus.socket", "incus.service")
UP = ("active", "activating", "reloading", "deactivating")


def parse(show: str) -> list[tuple[str, str]]:
    """(LoadState, ActiveState) per unit from `systemctl show -p LoadState -p ActiveState`."""
    out = []
    for block in show.strip().split("\n\n"):
        props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        out.append((props.get("LoadState", ""), props.get("ActiveState", "")))
    return out


def down_reason() -> str | None:
    """Why Incus will not answer, or None when it may still, or when systemd cannot say (no
    systemd, or Incus not run by it, as on a development host)."""
    try:
        proc = run(["systemctl", "show", "-p", "LoadState", "-p", "ActiveState", *UNITS],
                   check=False, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = parse(proc.stdout) if proc.returncode == 0 else []
    if len(states) != len(UNITS) or any(load != "loaded" or active in UP
                                        for load, active in states):
        return None
    return ("Incus will not start: " + ", ".join(
        f"{u} {active}" for u, (_, active) in zip(UNITS, states, strict=True))
        + " (anklume-firewall.service must load the isolation table first: "
        "`systemctl status anklume-firewall incus.socket`)")
