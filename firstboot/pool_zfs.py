"""OpenZFS pool: argv builders (pure). The passphrase always travels on stdin.

Pools are created with cachefile=none and imported by GUID at every boot: the boot medium is
read-only and replaceable, so no zpool.cache may be needed to find the pool again.
"""

from __future__ import annotations

from anklume.firstboot.steps import Command

# OpenZFS 2.x (trixie: 2.3) has zstd; lz4 would be the fallback on older pools.
COMPRESSION = "zstd"
DATASET_INCUS = "incus"  # Incus's state dir (/var/lib/incus), mounted by us (legacy)
DATASET_STORAGE = "incus-storage"  # handed to Incus as its `default` storage pool
DATASET_DOMAINS = "domains"  # parent of the per-domain datasets (own keys later)


def load_module() -> Command:
    """The ZFS module is not loaded at boot (image/extra/usr/lib/modprobe.d/anklume-zfs.conf) and
    the zfs tools do not load it (libzfs only does with ZFS_MODULE_LOADING=yes): every ZFS path
    of the wizard and the unlock loads it first. A no-op when it is loaded."""
    return Command(("modprobe", "zfs"))


def create(pool: str, device: str) -> Command:
    return Command((
        "zpool", "create", "-f",
        "-o", "ashift=12", "-o", "autotrim=on", "-o", "cachefile=none",
        "-O", "encryption=aes-256-gcm", "-O", "keyformat=passphrase", "-O", "keylocation=prompt",
        "-O", f"compression={COMPRESSION}", "-O", "atime=off", "-O", "xattr=sa",
        "-O", "acltype=posixacl", "-O", "mountpoint=none", "-O", "canmount=off",
        pool, device), stdin="passphrase")


def datasets(pool: str) -> tuple[Command, ...]:
    return (
        Command(("zfs", "create", "-o", "mountpoint=legacy", f"{pool}/{DATASET_INCUS}")),
        Command(("zfs", "create", "-o", "mountpoint=none", f"{pool}/{DATASET_STORAGE}")),
        Command(("zfs", "create", "-o", "mountpoint=none", "-o", "canmount=off",
                 f"{pool}/{DATASET_DOMAINS}")),
    )


def guid(pool: str) -> Command:
    return Command(("zpool", "get", "-H", "-p", "-o", "value", "guid", pool),
                   capture_as="zpool_guid")


def import_by_guid(pool_guid: str) -> Command:
    # -N: mount nothing yet (the key is not loaded); by-id: stable device names in the pool.
    return Command(("zpool", "import", "-d", "/dev/disk/by-id", "-N", "-o", "cachefile=none",
                    pool_guid))


def load_key(pool: str) -> Command:
    return Command(("zfs", "load-key", pool), stdin="passphrase")


def key_status(pool: str) -> Command:
    return Command(("zfs", "get", "-H", "-o", "value", "keystatus", pool))


def check_datasets(pool: str) -> Command:
    return Command(("zfs", "list", "-H", "-o", "name", f"{pool}/{DATASET_INCUS}",
                    f"{pool}/{DATASET_STORAGE}"))


def mount_incus(pool: str, target: str) -> Command:
    return Command(("mount", "-t", "zfs", f"{pool}/{DATASET_INCUS}", target))


def list_importable() -> Command:
    return Command(("zpool", "import", "-d", "/dev/disk/by-id"), check=False)


def dataset_exists(name: str) -> bool:
    """pyzfs (libzfs_core) where the image has it, else the zfs CLI through the choke point."""
    try:
        from libzfs_core import lzc_exists
    except ImportError:
        from anklume.run import run
        return run(["zfs", "list", "-H", "-o", "name", name], check=False).returncode == 0
    return bool(lzc_exists(name.encode()))
