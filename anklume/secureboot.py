"""The firmware's Secure Boot state, read from its EFI variables (efivarfs).

Each variable is 4 attribute bytes, then the value: one byte, 1 or 0, for SecureBoot and
SetupMode (UEFI 2.x, EFI global variable GUID). The console greeting (a shell script in the
image) reads the same two bytes.
"""

from __future__ import annotations

from pathlib import Path

EFIVARS = Path("/sys/firmware/efi/efivars")
GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
ON, OFF, SETUP, NO_EFI = "on", "off", "setup mode", "no EFI"


def _flag(efivars: Path, name: str) -> bool | None:
    try:
        data = (efivars / f"{name}-{GLOBAL_GUID}").read_bytes()
    except OSError:
        return None
    return len(data) > 4 and data[4] == 1


def state(efivars: Path | None = None) -> str:
    """on, off, setup mode (no platform key: anyone may enrol keys), or no EFI."""
    efivars = efivars or EFIVARS
    if not efivars.is_dir():
        return NO_EFI
    if _flag(efivars, "SetupMode"):
        return SETUP
    return ON if _flag(efivars, "SecureBoot") else OFF


def warning(s: str) -> str | None:
    """What the user must know about state `s`, or None when it is what the appliance needs."""
    if s == OFF:
        return ("Secure Boot is off: nothing checks the boot menu, the kernel or its command "
                "line before they run. Turn it on in the firmware setup.")
    if s == SETUP:
        return ("Secure Boot is in setup mode: any key can be enrolled and nothing is checked "
                "yet. Boot the stick once with the firmware in setup mode to enrol its keys, "
                "or enrol them in the firmware setup.")
    return None
