"""Whether Incus can still come up on this machine, as systemd sees it.

A wait for Incus to answer (the agent's, the health gate's) is patience with a busy machine.
Some states mean nothing will ever answer: the isolation table did not load, so
anklume-firewall.service failed and Incus, which requires it, never starts; or Incus's
daemon and socket both failed. Both waits then end at once with that reason instead of
running out their clock. Incus merely stopped (by the wizard moving its state, by a person)
is not one of them: it may be started again, so the wait goes on.
"""

from __future__ import annotations

import subprocess

from anklume.run import run

FIREWALL = "anklume-firewall.service"
UNITS = (FIREWALL, "incus.socket", "incus.service")
UP = ("active", "activating", "reloading", "deactivating")


def parse(show: str) -> list[tuple[str, str]]:
    """(LoadState, ActiveState) per unit from `systemctl show -p LoadState -p ActiveState`."""
    out = []
    for block in show.strip().split("\n\n"):
        props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        out.append((props.get("LoadState", ""), props.get("ActiveState", "")))
    return out


def judge(states: list[tuple[str, str]]) -> str | None:
    """The reason Incus will not come up, from the states of UNITS (pure)."""
    if len(states) != len(UNITS):
        return None
    (fw_load, fw), (sock_load, sock), (svc_load, svc) = states
    if sock_load != "loaded" or svc_load != "loaded" or sock in UP or svc in UP:
        return None  # not run by systemd here (a development host), or running or starting
    if fw_load == "loaded" and fw == "failed":
        return (f"Incus will not start: {FIREWALL} failed (the isolation table did not load, "
                f"and Incus requires it), incus.socket {sock}, incus.service {svc}")
    if "failed" in (sock, svc):
        return f"Incus will not start: incus.socket {sock}, incus.service {svc}"
    return None


def down_reason() -> str | None:
    """Why Incus will not answer, or None when it may still, or when systemd cannot say."""
    try:
        proc = run(["systemctl", "show", "-p", "LoadState", "-p", "ActiveState", *UNITS],
                   check=False, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return judge(parse(proc.stdout)) if proc.returncode == 0 else None
