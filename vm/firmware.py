"""The firmware of a VM: OVMF built with Secure Boot, and variables with our keys enrolled.

OVMF's variable store starts in setup mode (no platform key): systemd-boot then enrols the keys
that the image carries on its ESP and resets, as on a real machine whose owner cleared its keys.
`enrolled_vars` writes a store that already trusts our keys, for boots that are not about
enrolment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

OVMF_DIR = Path(os.environ.get("ANKLUME_OVMF_DIR", "/usr/share/OVMF"))
OVMF_CODE = OVMF_DIR / "OVMF_CODE_4M.secboot.fd"
OVMF_VARS = OVMF_DIR / "OVMF_VARS_4M.fd"

# systemd-boot's vendor GUID (Boot Loader Interface variables).
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
# Any owner GUID for our signature lists (it is recorded, not checked).
_KEY_OWNER = "a0e7f5a4-2b3c-4d5e-8f90-616e6b6c756d"


def enrolled_vars(db_cert: Path, dest: Path, menu_timeout: int | None = 0) -> Path:
    """OVMF variables of a machine whose firmware already trusts our keys: PK, KEK and db set
    to the image's Secure Boot certificate (what systemd-boot's enrolment of mkosi's .auth
    files gives), Secure Boot on, and systemd-boot's menu timeout (`LoaderConfigTimeout`, as
    `bootctl set-timeout` writes it) when given. Written offline with virt-fw-vars: a boot
    that starts from them skips the enrolment and its reset. Only test_boot's main boot still
    starts in setup mode, to prove the enrolment itself."""
    argv = [str(Path(sys.executable).with_name("virt-fw-vars")), "-i", str(OVMF_VARS),
            "-o", str(dest), "--set-pk", _KEY_OWNER, str(db_cert),
            "--add-kek", _KEY_OWNER, str(db_cert), "--add-db", _KEY_OWNER, str(db_cert), "--sb"]
    with tempfile.TemporaryDirectory(prefix="anklume-vars-") as tmp:
        if menu_timeout is not None:
            data = (str(menu_timeout) + "\0").encode("utf-16-le").hex()
            var = Path(tmp) / "loader.json"
            var.write_text(json.dumps({"version": 2, "variables": [
                {"name": "LoaderConfigTimeout", "guid": LOADER_GUID, "attr": 7,
                 "data": data}]}))
            argv += ["--set-json", str(var)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"virt-fw-vars failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return dest
