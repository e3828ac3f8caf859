"""The vault: this machine's trusted state, kept inside the encrypted data pool.

The persistent partition is plain ext4 on the stick: anyone holding the stick for two minutes
can change it. So on a machine with a data pool, whatever widens access or decides isolation
lives in the vault instead (a dataset `<pool>/anklume`, or the btrfs subvolume `anklume`),
mounted at paths.vault_dir() by the unlock, before Incus, the agent, sshd and root's password
are set up: root's password hash and SSH keys, infra.yml, the last applied firewall, the
user's network files. Until the unlock only signed /usr content decides the firewall (the
default table), the network (DHCP) and logins (root locked).

The same names on the persistent partition are ignored on such a machine, and the console
says so at every boot: nothing of this system writes them there once a pool exists.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from anklume import paths
from anklume.firstboot.steps import Command

DATASET = "anklume"  # ZFS: <pool>/anklume; LUKS+btrfs: the subvolume `anklume`
NETWORK_SUFFIXES = (".network", ".netdev", ".link")
DEFAULT_WIRED = "80-anklume-wired.network"  # /usr/lib/systemd/network: DHCP on wired NICs


def mount(backend: str, pool: str) -> tuple[Command, ...]:
    """Create the vault when the pool has none (a pool made before it existed), mount it.
    Idempotent: the wizard and the unlock may both run it at one boot."""
    v = shlex.quote(str(paths.vault_dir()))
    if backend == "zfs":
        ds = shlex.quote(f"{pool}/{DATASET}")
        ensure = (f"zfs list -H -o name {ds} >/dev/null 2>&1 || "
                  f"zfs create -o mountpoint=legacy {ds}")
        attach = f"mount -t zfs {ds} {v}"
    else:
        sub = shlex.quote(f"{paths.pool_mount()}/{DATASET}")
        ensure = (f"btrfs subvolume show {sub} >/dev/null 2>&1 || "
                  f"btrfs subvolume create {sub}")
        attach = f"mount --bind {sub} {v}"
    script = (f"set -e; {ensure}; mkdir -p {v}; mountpoint -q {v} || {attach}; "
              f"chmod 0700 {v}")
    return (Command(("sh", "-c", script)),)


def adopt_plain() -> Command:
    """At the wizard's run (the stick as flashed, nothing else has touched it yet): the
    configuration already on the persistent partition (an infra.yml provisioned from a
    credential, network files) moves into the vault unless the vault has its own (an imported
    pool keeps its state); the partition keeps none of it."""
    script = ('v=$1; s=$2; shift 2; for n in "$@"; do '
              'if [ -e "$s/$n" ] && [ ! -e "$v/$n" ]; then '
              'mkdir -p "$(dirname "$v/$n")" && cp -a "$s/$n" "$v/$n" || exit 1; fi; '
              'rm -rf "${s:?}/$n"; done')
    return Command(("sh", "-c", script, "sh", str(paths.vault_dir()), str(paths.state_dir()),
                    *paths.CONFIG_NAMES))


def ignored(state: Path | None = None) -> list[str]:
    """The configuration names present on the persistent partition of a machine with a pool:
    none of this system's writers put them there, so they are ignored (and reported)."""
    state = state or paths.state_dir()
    return [n for n in paths.CONFIG_NAMES if (state / n).exists() or (state / n).is_symlink()]


def tamper_message(names: list[str]) -> str:
    return ("WARNING: ignored on the unencrypted persistent partition (this machine keeps them "
            "in its data pool; nothing of anklume writes them there, so someone else did): "
            + ", ".join(names))


def network_files(vault: Path | None = None) -> list[Path]:
    d = (vault or paths.vault_dir()) / "network"
    if not d.is_dir():
        return []
    return sorted(f for f in d.iterdir()
                  if f.is_file() and not f.is_symlink() and f.suffix in NETWORK_SUFFIXES)


def install_network(files: list[Path], etc_network: Path) -> bool:
    """The vault's network files into /etc/systemd/network (a tmpfs); any .network replaces
    the default DHCP on wired NICs as a whole. True when anything was installed."""
    if not files:
        return False
    etc_network.mkdir(parents=True, exist_ok=True)
    for f in files:
        (etc_network / f.name).write_bytes(f.read_bytes())
    if any(f.suffix == ".network" for f in files):
        mask = etc_network / DEFAULT_WIRED
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")
    return True


Run = Callable[[list[str]], tuple[int, str]]  # argv -> (returncode, stderr)


def after_unlock(run: Run, say: Callable[[str], None], *, vault: Path | None = None,
                 etc_network: Path = Path("/etc/systemd/network")) -> None:
    """Once the vault is mounted, before Incus starts: the last applied firewall and the
    network files from the vault. Problems are said, never raised: a boot with the pool open
    must go on (the agent applies the firewall again anyway)."""
    vault = vault or paths.vault_dir()
    fw = vault / "firewall.nft"
    if fw.is_file() and fw.stat().st_size:
        rc, err = run(["nft", "-f", str(fw)])
        say("isolation firewall: the last applied table, from the data pool" if rc == 0 else
            f"the last applied firewall from the data pool does not load ({err.strip()}); the "
            "default table stays until the agent applies")
    try:
        installed = install_network(network_files(vault), etc_network)
    except OSError as e:
        say(f"network files from the data pool not installed: {e}")
        return
    if installed:
        rc, err = run(["networkctl", "reload"])
        say("network configuration from the data pool" if rc == 0 else
            f"network configuration from the data pool installed, but networkctl reload "
            f"failed: {err.strip()}")
