"""Every place on disk that anklume's Python code reads or writes, named once.

The state directory is the persistent partition (survives reboots and OS updates); the run
directory is a tmpfs (gone at reboot: right for a lock or this boot's pool state); the share
directory is inside the verified, read-only /usr. Each function reads its environment override
at call time, so tests and development hosts can point it elsewhere after import.

The image's shell scripts and systemd units (image/extra, image/initrd, updates/sysupdate.d)
cannot import this and name the default locations literally: keep them in step.
"""

from __future__ import annotations

import os
from pathlib import Path

# The appliance's defaults. DEFAULT_STATE_DIR is also where the persistent partition is mounted.
DEFAULT_STATE_DIR = Path("/var/lib/anklume")
DEFAULT_RUN_DIR = Path("/run/anklume")
SHARE_DIR = Path("/usr/share/anklume")
# Incus's own state directory (not anklume's): in RAM in live mode, on the data pool after the
# first boot moved it there. A string: it goes into commands and Incus device settings.
INCUS_DIR = "/var/lib/incus"
# The host end of each unix-socket service grant (agent/services.py): a directory only root can
# enter, made at boot by tmpfiles.d (before Incus starts a provider) and by the agent. Fixed,
# like INCUS_DIR: it goes into Incus device settings.
SERVICE_SOCKETS = "/run/anklume/services"
# The build host's signing keys: outside the repository, and not under ANKLUME_STATE_DIR (a
# build host's keys are not an appliance's state).
DEFAULT_KEY_DIR = DEFAULT_STATE_DIR / "keys"


def _env(name: str, default: Path) -> Path:
    return Path(os.environ.get(name) or default)


def state_dir() -> Path:
    return _env("ANKLUME_STATE_DIR", DEFAULT_STATE_DIR)


def run_dir() -> Path:
    return _env("ANKLUME_RUN_DIR", DEFAULT_RUN_DIR)


# ------------------------------------------------------------------ persistent (state_dir)

def has_pool() -> bool:
    """The first-boot wizard made (or imported) a data pool on this machine."""
    return firstboot_record().exists()


def vault_dir() -> Path:
    """The data pool's own directory for this machine's trusted state (a dataset or subvolume
    of the encrypted pool, mounted here by the unlock): a mount point on the tmpfs, so that
    nothing is there unless the pool that opened put it there."""
    return run_dir() / "vault"


def vault_mounted() -> bool:
    return os.path.ismount(vault_dir())


def config_dir() -> Path:
    """Where the user's configuration and the agent's saved firewall live: the vault on a
    machine with a data pool (the persistent partition is not encrypted, so anyone holding the
    stick could change it), the persistent partition in live mode (which protects nothing)."""
    return vault_dir() if has_pool() else state_dir()


# What config_dir() holds, by name; on a machine with a pool the same names on the persistent
# partition are ignored, and said to be (firstboot/vault.py).
CONFIG_NAMES = ("infra.yml", "infra", "firewall.nft", "network", "identity/root-password-hash",
                "identity/ssh/authorized_keys")


def user_config() -> Path | None:
    """The user's infra.yml, else their infra/ directory, else None (the embedded default)."""
    f = config_dir() / "infra.yml"
    if f.is_file():
        return f
    d = config_dir() / "infra"
    if d.is_dir():
        return d
    return None


def firewall_file() -> Path:
    return config_dir() / "firewall.nft"


def last_result_file() -> Path:
    return state_dir() / "last-result.json"


def firstboot_record() -> Path:
    """The first-boot wizard's choices (firstboot/choices.py): a data pool exists."""
    return state_dir() / "firstboot.json"


def pool_key_cred() -> Path:
    """The ZFS pool's passphrase sealed to the TPM2 (systemd-creds), when enrolled."""
    return state_dir() / "pool-key.cred"


def authorized_keys(base: Path | None = None) -> Path:
    """root's SSH keys (the wizard's); the image's sshd reads them in the vault."""
    return (base or config_dir()) / "identity/ssh/authorized_keys"


def root_password_hash(base: Path | None = None) -> Path:
    """/etc is rebuilt at every boot, so the image applies this hash at every boot, once the
    pool is unlocked (anklume-admin.service)."""
    return (base or config_dir()) / "identity/root-password-hash"


def update_state_file() -> Path:
    return state_dir() / "update-state.json"


# ------------------------------------------------------------------ this boot (run_dir)

def lock_file() -> Path:
    return run_dir() / "apply.lock"


def pool_status_file() -> Path:
    """This boot's state of the data pool (anklume/pool_status.py)."""
    return run_dir() / "pool-status"


def pool_mount() -> Path:
    """The LUKS+btrfs pool's top level, mounted at every boot (Incus's storage pool is in it)."""
    return run_dir() / "pool"


def incus_staging() -> Path:
    """Where the first boot mounts the pool's Incus dataset to copy Incus's state into it."""
    return run_dir() / "incus-new"


def cfg_mount() -> Path:
    """The user's ANKLUME-CFG volume, mounted read-only to read the answers file."""
    return run_dir() / "cfg"


def update_work_dir() -> Path:
    """Downloads and the staging directory named by updates/sysupdate.d."""
    return run_dir() / "update"


# ------------------------------------------------------------------ the image (read-only /usr)

def image_catalog() -> Path:
    """The container images the build ships (agent/images.py)."""
    return _env("ANKLUME_IMAGE_CATALOG", SHARE_DIR / "images")


def trust_anchors_dir() -> Path:
    """The update and Secure Boot db certificates the build installs."""
    return SHARE_DIR / "keys"


# ------------------------------------------------------------------ the build host

def key_dir() -> Path:
    # The override lets tests and CI keep a throw-away key set elsewhere.
    return _env("ANKLUME_KEY_DIR", DEFAULT_KEY_DIR)


def tools_dir() -> Path:
    """mkosi and the image tools (scripts/setup-image-tools installs them)."""
    return _env("ANKLUME_TOOLS_DIR", DEFAULT_STATE_DIR / "tools")


def cache_dir() -> Path:
    return _env("ANKLUME_CACHE_DIR", Path("/var/cache/anklume"))
