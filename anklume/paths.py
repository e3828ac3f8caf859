"""Where the appliance keeps the agent's files.

STATE_DIR is the persistent partition (survives reboots and OS updates); RUN_DIR is a tmpfs
(gone at reboot: right for a lock). Both can be moved by environment variables, which the
functions read at call time so tests and development hosts can point them elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR = Path(os.environ.get("ANKLUME_STATE_DIR", "/var/lib/anklume"))
RUN_DIR = Path(os.environ.get("ANKLUME_RUN_DIR", "/run/anklume"))


def state_dir() -> Path:
    return Path(os.environ.get("ANKLUME_STATE_DIR", "/var/lib/anklume"))


def run_dir() -> Path:
    return Path(os.environ.get("ANKLUME_RUN_DIR", "/run/anklume"))


def user_config() -> Path | None:
    """The user's infra.yml, else their infra/ directory, else None (the embedded default)."""
    f = state_dir() / "infra.yml"
    if f.is_file():
        return f
    d = state_dir() / "infra"
    if d.is_dir():
        return d
    return None


def firewall_file() -> Path:
    return state_dir() / "firewall.nft"


def last_result_file() -> Path:
    return state_dir() / "last-result.json"


def lock_file() -> Path:
    return run_dir() / "apply.lock"


def firstboot_record() -> Path:
    """The first-boot wizard's choices (firstboot/choices.py): a data pool exists."""
    return state_dir() / "firstboot.json"


def pool_status_file() -> Path:
    """This boot's state of the data pool, written by `anklume firstboot unlock|run`."""
    return run_dir() / "pool-status"
