"""LUKS2 + btrfs pool: argv builders (pure). The passphrase always travels on stdin.

The LUKS and btrfs UUIDs are chosen up front (passed to luksFormat/mkfs) so the plan knows
the pool pointer before anything runs, and the record never depends on parsing tool output.
"""

from __future__ import annotations

from anklume import paths
from anklume.firstboot.steps import Command

MAPPER = "anklume-data"
MAPPED = f"/dev/mapper/{MAPPER}"
SUBVOL_INCUS = "incus"
SUBVOL_STORAGE = "incus-storage"
SUBVOL_DOMAINS = "domains"
# argon2id capped at 256 MiB: a small appliance must unlock without swapping.
PBKDF_MEMORY_KIB = 262144
TPM2_PCRS = "7"  # Secure Boot state: a changed firmware policy falls back to the passphrase


def by_uuid(luks_uuid: str) -> str:
    return f"/dev/disk/by-uuid/{luks_uuid}"


def format_(device: str, luks_uuid: str) -> Command:
    return Command(("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
                    "--pbkdf", "argon2id", "--pbkdf-memory", str(PBKDF_MEMORY_KIB),
                    "--uuid", luks_uuid, "--label", MAPPER, "--key-file=-", device),
                   stdin="passphrase")


def open_(device: str) -> Command:
    return Command(("cryptsetup", "open", "--type", "luks2", "--key-file=-", device, MAPPER),
                   stdin="passphrase")


def test_passphrase(device: str) -> Command:
    return Command(("cryptsetup", "open", "--test-passphrase", "--key-file=-", device),
                   stdin="passphrase")


def mkfs(btrfs_uuid: str) -> Command:
    return Command(("mkfs.btrfs", "-f", "-L", "anklume", "-U", btrfs_uuid, MAPPED))


def mount_top() -> tuple[Command, ...]:
    top = str(paths.pool_mount())
    return (Command(("mkdir", "-p", top)),
            Command(("mount", "-t", "btrfs", "-o", "subvolid=5,noatime", MAPPED, top)))


def subvolumes() -> tuple[Command, ...]:
    return tuple(Command(("btrfs", "subvolume", "create", f"{paths.pool_mount()}/{name}"))
                 for name in (SUBVOL_INCUS, SUBVOL_STORAGE, SUBVOL_DOMAINS))


def check_subvolumes() -> Command:
    return Command(("btrfs", "subvolume", "show", f"{paths.pool_mount()}/{SUBVOL_INCUS}"))


def btrfs_uuid() -> Command:
    return Command(("blkid", "-s", "UUID", "-o", "value", MAPPED), capture_as="btrfs_uuid")


def mount_incus(target: str) -> Command:
    return Command(("mount", "--bind", f"{paths.pool_mount()}/{SUBVOL_INCUS}", target))


def enroll_tpm2(device: str) -> Command:
    # An empty --tpm2-public-key= binds to PCR 7 alone: by default cryptenroll also binds to a
    # signed PCR 11 policy whenever it finds a PCR public key (a UKI may ship one), a policy
    # whose signatures this image does not manage.
    return Command(("systemd-cryptenroll", "--tpm2-device=auto", f"--tpm2-pcrs={TPM2_PCRS}",
                    "--tpm2-public-key=", "--unlock-key-file=/dev/stdin", device),
                   stdin="passphrase")


def enroll_recovery_key(device: str) -> Command:
    # Prints the key on stdout (a pipe: the key alone): shown once on the consoles, never
    # logged nor stored.
    return Command(("systemd-cryptenroll", "--recovery-key", "--unlock-key-file=/dev/stdin",
                    device), stdin="passphrase",
                   show_output="Recovery key of the data pool: it unlocks the pool in place of the "
                               "passphrase. Write it down now: it is shown only this once.")
