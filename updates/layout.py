"""What an update must fit: the disk layout of image/LAYOUT.md, as the manifest's compat block.

An update names the layout it was built for; a client accepts only the layout it runs on,
so a version with another partition table (bigger slots, new partitions) is refused instead
of being written into slots it does not fit.
"""

from __future__ import annotations

MIB = 1024 * 1024

# Bump LAYOUT_VERSION whenever image/repart.d or image/extra/usr/lib/repart.d change sizes or
# partitions; the values below are the slot sizes of layout 1.
LAYOUT_VERSION = 1
ARCH = "x86-64"
USR_SLOT_BYTES = 512 * MIB
USR_VERITY_BYTES = 8 * MIB
USR_VERITY_SIG_BYTES = 16 * 1024


def compat() -> dict[str, object]:
    """The compat block of this client (and of what `anklume publish` writes)."""
    return {
        "layout": LAYOUT_VERSION,
        "arch": ARCH,
        "usr_slot_bytes": USR_SLOT_BYTES,
        "usr_verity_bytes": USR_VERITY_BYTES,
        "usr_verity_sig_bytes": USR_VERITY_SIG_BYTES,
    }


# Largest size each partition role may have: the slot it is written into.
ROLE_MAX_BYTES = {
    "usr": USR_SLOT_BYTES,
    "usr-verity": USR_VERITY_BYTES,
    "usr-verity-sig": USR_VERITY_SIG_BYTES,
}
