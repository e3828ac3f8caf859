"""Hand a verified staging directory to systemd-sysupdate, which writes slot and UKI.

The transfer definitions ship in this package (`sysupdate.d/`, installed in the image); their
source `Path=` names a default staging directory, and apply writes a copy that names the
directory it actually verified, then runs `systemd-sysupdate --definitions=<copy> update <v>`.
sysupdate runs the transfers in file-name order: usr, usr-verity, usr-verity-sig, UKI last.
"""

from __future__ import annotations

import re
from pathlib import Path

from anklume.errors import CommandError
from anklume.updates.runner import Runner, interactive

SHIPPED = Path(__file__).parent / "sysupdate.d"
# Debian installs it outside PATH (package systemd-container in trixie).
SYSUPDATE = "/usr/lib/systemd/systemd-sysupdate"


def render(text: str, staging: Path) -> str:
    """The definition with its [Source] Path= pointing at `staging` (other sections kept)."""
    out, section = [], ""
    for line in text.splitlines():
        m = re.match(r"\s*\[(\w+)\]", line)
        if m:
            section = m.group(1)
        if section == "Source" and re.match(r"\s*Path\s*=", line):
            line = f"Path={staging}"
        out.append(line)
    return "\n".join(out) + "\n"


def write_definitions(staging: Path, dest: Path, shipped: Path = SHIPPED) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.transfer"):
        old.unlink()
    written = []
    for src in sorted(shipped.glob("*.transfer")):
        p = dest / src.name
        p.write_text(render(src.read_text(), staging))
        written.append(p)
    return written


def argv(definitions: Path, version: str, *, reboot: bool = False) -> list[str]:
    return [SYSUPDATE, f"--definitions={definitions}", *(["--reboot"] if reboot else []),
            "update", version]


def install(definitions: Path, version: str, *, reboot: bool = False,
            runner: Runner = interactive) -> None:
    cmd = argv(definitions, version, reboot=reboot)
    proc = runner(cmd)
    if proc.returncode != 0:
        raise CommandError(cmd, proc.returncode, proc.stderr if isinstance(proc.stderr, str)
                           else "")
