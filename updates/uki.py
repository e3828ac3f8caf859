"""Check a new UKI before it is installed: Secure Boot signature and the /usr it pins."""

from __future__ import annotations

from pathlib import Path

from anklume import uki as ukifile
from anklume.updates.errors import UkiSignatureInvalid, UsrHashMismatch
from anklume.updates.runner import Runner, system


def verify_signature(uki: Path, db_cert: Path, runner: Runner = system) -> None:
    """The firmware will boot it only if db trusts its signer: check with the same cert."""
    proc = runner(["sbverify", "--cert", str(db_cert), str(uki)])
    if proc.returncode != 0:
        out = f"{proc.stdout or ''}{proc.stderr or ''}".strip().splitlines()
        raise UkiSignatureInvalid(
            f"{uki.name}: Secure Boot signature does not verify against {db_cert}"
            f" ({out[-1] if out else 'sbverify status ' + str(proc.returncode)})",
            hint="the UKI was signed with another db key, or not signed")


def verify_usrhash(uki: Path, root_hash: str) -> None:
    """Every command line the UKI can boot (base and each profile) must pin this root hash."""
    try:
        lines = ukifile.cmdlines(uki)
    except ukifile.NotPE as e:
        raise UkiSignatureInvalid(f"{uki.name}: not a PE image ({e})") from None
    for which, cmdline in lines.items():
        found = ukifile.usrhash_values(cmdline)
        if found != [root_hash]:
            got = ", ".join(found) if found else "none"
            raise UsrHashMismatch(
                f"{uki.name}: {which} command line has usrhash={got}, the signed root hash "
                f"of the slot is {root_hash}")
