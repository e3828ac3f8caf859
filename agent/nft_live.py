"""Live nftables I/O for the `inet anklume` table, through the one command choke point.

We drive the `nft` binary (`nft -f -` to load, `nft -j list table` to read) rather than
libnftables: its Python binding (python3-nftables) exists only for Debian's system Python, not
in the agent's virtual environment, and `nft -f` already gives what matters here: a whole file
is committed as one netlink transaction or not at all.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

from anklume.agent.firewall import FAMILY, TABLE, Firewall, parse
from anklume.errors import CommandError, PermanentError
from anklume.run import run

# The command that reaches the kernel; tests point it into a private network namespace
# (`ip netns exec NAME nft`) so they never touch the host's firewall.
NFT_ARGV: Sequence[str] = ("nft",)
_TIMEOUT = 30.0


def _nft(args: Sequence[str], *, input: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        return run([*NFT_ARGV, *args], input=input, check=check, timeout=_TIMEOUT)
    except FileNotFoundError as e:
        raise PermanentError("the nft command is missing", hint="install nftables") from e


def _list(args: Sequence[str]) -> str | None:
    proc = _nft([*args, "list", "table", FAMILY, TABLE], check=False)
    if proc.returncode == 0:
        return proc.stdout
    if "No such file or directory" in (proc.stderr or ""):
        return None
    raise CommandError([*NFT_ARGV, *args, "list", "table", FAMILY, TABLE], proc.returncode,
                       proc.stderr or "")


def read_table() -> str | None:
    """The live table as `nft list table` prints it (to save it as a script), or None when it
    does not exist."""
    return _list([])


def read_json() -> dict[str, Any] | None:
    """The live table as `nft -j list table` writes it, or None when it does not exist."""
    out = _list(["-j"])
    return None if out is None else json.loads(out)


def observe() -> Firewall:
    """Observed firewall state: the live table (absent: `present=False`)."""
    return parse(read_json())


def load(script: str) -> None:
    """Commit a script in one transaction; on any error nothing of it is applied."""
    _nft(["-f", "-"], input=script)


def check(script: str) -> None:
    """Let the real nft parser and kernel validate a script without committing it."""
    _nft(["-c", "-f", "-"], input=script)
