"""After the README's first command (scripts/build, through scripts/setup-host; the test command
runs it too), `anklume` is on the PATH as the README's next commands use it."""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_anklume_is_on_the_path_after_setup() -> None:
    # The PATH of a root login shell, not this interpreter's: the venv's bin is not on it.
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    exe = shutil.which("anklume", path=path)
    assert exe, "anklume is not on a login shell's PATH: scripts/setup-host links it"
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PATH": path})
    version = (REPO / "anklume" / "VERSION").read_text().strip()
    assert r.returncode == 0 and r.stdout.strip() == f"anklume {version}", r.stdout + r.stderr
