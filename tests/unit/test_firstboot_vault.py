"""The vault (firstboot/vault.py): on a machine with a data pool, credentials and configuration
come from the encrypted pool, and the same names on the unencrypted persistent partition are
ignored and reported. Real files and a real shell for the wizard's move; the commands that
need a pool (zfs, btrfs, nft, networkctl) are the VM tests' (tests/vm/test_firstboot.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from anklume import paths
from anklume.agent import remote
from anklume.firstboot import vault


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    state, run = tmp_path / "state", tmp_path / "run"
    state.mkdir()
    monkeypatch.setenv("ANKLUME_STATE_DIR", str(state))
    monkeypatch.setenv("ANKLUME_RUN_DIR", str(run))
    return state, run


def test_config_lives_in_the_vault_once_a_pool_exists(dirs: tuple[Path, Path]) -> None:
    state, run = dirs
    assert paths.config_dir() == state  # live mode: the persistent partition
    assert paths.firewall_file() == state / "firewall.nft"
    (state / "infra.yml").write_text("x")
    assert paths.user_config() == state / "infra.yml"
    (state / "firstboot.json").write_text("{}")
    assert paths.config_dir() == run / "vault"
    assert paths.firewall_file() == run / "vault/firewall.nft"
    assert paths.authorized_keys() == run / "vault/identity/ssh/authorized_keys"
    assert paths.root_password_hash() == run / "vault/identity/root-password-hash"
    # The plain partition's infra.yml is not the user's configuration any more.
    assert paths.user_config() is None
    (run / "vault").mkdir(parents=True)
    (run / "vault/infra.yml").write_text("y")
    assert paths.user_config() == run / "vault/infra.yml"


def test_planted_files_on_the_plain_partition_are_named(dirs: tuple[Path, Path]) -> None:
    state, _ = dirs
    assert vault.ignored() == []
    (state / "identity/ssh").mkdir(parents=True)
    (state / "identity/ssh/authorized_keys").write_text("ssh-ed25519 AAAA evil\n")
    (state / "identity/root-password-hash").write_text("$y$planted\n")
    (state / "firewall.nft").write_text("table ip evil {}\n")
    (state / "network").mkdir()
    (state / "identity/machine-id").write_text("0" * 32)  # identity stays on the partition
    got = vault.ignored()
    assert got == ["firewall.nft", "network", "identity/root-password-hash",
                   "identity/ssh/authorized_keys"], got
    msg = vault.tamper_message(got)
    assert msg.startswith("WARNING: ignored on the unencrypted persistent partition")
    assert "identity/ssh/authorized_keys" in msg


def test_the_wizard_moves_the_first_boot_config_into_the_vault(dirs: tuple[Path, Path]) -> None:
    """adopt_plain: what the stick carried at the wizard's run moves in; what the vault has
    already (an imported pool) wins; the partition keeps none of it."""
    state, run = dirs
    v = run / "vault"
    (v / "network").mkdir(parents=True)
    (v / "network/10-own.network").write_text("[Match]\n")
    (state / "infra.yml").write_text("provisioned\n")
    (state / "network").mkdir()
    (state / "network/20-plain.network").write_text("[Match]\n")
    cmd = vault.adopt_plain()
    subprocess.run(list(cmd.argv), check=True, timeout=30)
    assert (v / "infra.yml").read_text() == "provisioned\n"
    assert sorted(f.name for f in (v / "network").iterdir()) == ["10-own.network"]
    assert not (state / "infra.yml").exists() and not (state / "network").exists()
    assert vault.ignored() == []


def test_vault_mount_commands_are_idempotent_and_per_backend() -> None:
    (zfs,) = vault.mount("zfs", "tank")
    script = zfs.argv[2]
    assert "zfs list -H -o name tank/anklume >/dev/null 2>&1 || zfs create" in script
    assert f"mountpoint -q {paths.vault_dir()} || mount -t zfs tank/anklume" in script
    (luks,) = vault.mount("luks-btrfs", "")
    script = luks.argv[2]
    assert f"btrfs subvolume create {paths.pool_mount()}/anklume" in script
    assert f"mount --bind {paths.pool_mount()}/anklume {paths.vault_dir()}" in script
    assert script.rstrip().endswith(f"chmod 0700 {paths.vault_dir()}")


def test_after_unlock_loads_the_vaults_firewall_and_network(tmp_path: Path) -> None:
    v, etc = tmp_path / "vault", tmp_path / "etc-network"
    (v / "network").mkdir(parents=True)
    (v / "firewall.nft").write_text("table inet anklume {}\n")
    (v / "network/10-static.network").write_text("[Match]\nName=en*\n")
    (v / "network/notes.txt").write_text("not a network file")
    calls: list[list[str]] = []
    said: list[str] = []

    def run(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        return 0, ""

    vault.after_unlock(run, said.append, vault=v, etc_network=etc)
    assert calls == [["nft", "-f", str(v / "firewall.nft")], ["networkctl", "reload"]]
    assert sorted(f.name for f in etc.iterdir()) == ["10-static.network", vault.DEFAULT_WIRED]
    assert (etc / vault.DEFAULT_WIRED).readlink() == Path("/dev/null")  # DHCP replaced
    assert said == ["isolation firewall: the last applied table, from the data pool",
                    "network configuration from the data pool"]


def test_after_unlock_says_when_the_firewall_does_not_load(tmp_path: Path) -> None:
    v = tmp_path / "vault"
    v.mkdir()
    (v / "firewall.nft").write_text("garbage\n")
    said: list[str] = []
    vault.after_unlock(lambda argv: (1, "syntax error\n"), said.append, vault=v,
                       etc_network=tmp_path / "etc")
    assert said == ["the last applied firewall from the data pool does not load (syntax "
                    "error); the default table stays until the agent applies"]
    assert not (tmp_path / "etc").exists()  # no network files: nothing installed


def test_remote_install_goes_into_the_vault_and_never_while_it_is_locked(
        dirs: tuple[Path, Path], tmp_path: Path) -> None:
    state, _ = dirs
    received = tmp_path / "sent.yml"
    received.write_text("schema_version: 1\n")
    assert remote.install(received) == state / "infra.yml"  # live mode
    (state / "firstboot.json").write_text("{}")
    with pytest.raises(remote.RemoteError, match="not unlocked"):
        remote.install(received)  # the vault is not mounted
