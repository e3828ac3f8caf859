"""The interactive wizard driven with scripted console input, and `firstboot run`'s flow:
dry-run runs no command and writes nothing, invalid answers change nothing, exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest
from test_firstboot_plan import EMPTY, HASH, KEY, PASS, ZFS, ctx, yml

from anklume.firstboot import answers, choices, flow, passphrase, plan


class Scripted:
    def __init__(self, asks: list[str], secrets: list[str]) -> None:
        self.asks, self.secrets = deque(asks), deque(secrets)
        self.out: list[str] = []
        self.prompts: list[str] = []

    def say(self, text: str) -> None:
        self.out.append(text)

    def ask(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.asks.popleft()

    def secret(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.secrets.popleft()

    def show_once(self, text: str) -> None:
        self.out.append(text)

    @property
    def text(self) -> str:
        return "\n".join(self.out)


def no_command(*args: object, **kw: object) -> object:
    raise AssertionError(f"a command ran: {args}")


class Recorder:
    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def __call__(self, argv: list[str], *, input: object = None, check: bool = True) -> object:
        self.argvs.append(argv)

        class P:
            stdout = "555\n" if argv[:2] == ["zpool", "get"] else ""
        return P()


def test_interactive_create_on_a_disk_with_data_needs_its_name_typed(tmp_path: Path) -> None:
    disks_offered = [d.path for d in ctx().disks if d.candidate]
    assert disks_offered == ["/dev/sda", "/dev/sdb", "/dev/sdc"]
    con = Scripted(
        asks=["1",          # create
              "2",          # the disk holding a ZFS pool (sdb)
              "",           # backend: default ZFS
              KEY,          # ssh key
              "n",          # no root password
              "sdb",        # wrong confirmation: goes back
              "y",          # choose again
              "2", "", KEY, "y",  # same disk, zfs, key, and a root password this time
              ZFS],         # the by-id name typed: confirmed
        secrets=["short", PASS, PASS + "x",   # too short, then a mismatch
                 PASS, PASS,                  # accepted
                 PASS, PASS, "rootroot1", "rootroot1"])
    rec = Recorder()
    rc = flow.firstboot_run(con, answers_file=None, dry_run=False, yes=False, tty=True,
                            ctx=ctx, runner=rec, root=tmp_path, hasher=lambda pw: HASH)
    assert rc == flow.DONE, con.text
    assert "Too short: use at least 12 characters" in con.text
    assert "The two passphrases differ" in con.text
    assert "Not confirmed; nothing was changed." in con.text
    assert f"ERASE the disk {ZFS}" in con.text and "pool name 'anklume'" in con.text
    assert "GPU: NVIDIA GPU with 8 GiB VRAM; local models: qwen2.5-coder:7b" in con.text
    assert rec.argvs[0] == ["wipefs", "--all", "--force", f"/dev/disk/by-id/{ZFS}"]
    assert ["chpasswd", "-e"] in rec.argvs
    c = choices.load(tmp_path / "var/lib/anklume/firstboot.json")
    assert c is not None and c.done and c.zpool_guid == "555" and c.disk_by_id == ZFS
    assert PASS not in con.text and "rootroot1" not in con.text  # secrets are never echoed


def test_interactive_decline_changes_nothing(tmp_path: Path) -> None:
    con = Scripted(asks=["1", "1", "", KEY, "n", "n"], secrets=[PASS, PASS])
    rc = flow.firstboot_run(con, answers_file=None, dry_run=False, yes=False, tty=True,
                            ctx=ctx, runner=no_command, root=tmp_path)
    assert rc == flow.DECLINED and "is empty: nothing is erased" in con.text
    assert list(tmp_path.iterdir()) == []


def test_interactive_import_offers_only_disks_with_a_pool(tmp_path: Path) -> None:
    con = Scripted(asks=["2", "1", "", "y", "y"], secrets=[PASS, "rootroot1", "rootroot1"])
    rec = Recorder()
    rc = flow.firstboot_run(con, answers_file=None, dry_run=False, yes=False, tty=True,
                            ctx=ctx, runner=rec, root=tmp_path, hasher=lambda pw: HASH)
    assert rc == flow.DONE, con.text
    assert rec.argvs[0] == ["modprobe", "zfs"]
    assert rec.argvs[1][:2] == ["zpool", "import"] and "wipefs" not in str(rec.argvs)
    assert "The same passphrase again:" not in con.prompts  # import asks once


def test_dry_run_with_an_answers_file_touches_nothing(tmp_path: Path) -> None:
    f = tmp_path / "a.yml"
    f.write_text(yml(disk=ZFS, erase=ZFS))
    con = Scripted([], [])
    rc = flow.firstboot_run(con, answers_file=f, dry_run=True, yes=False, tty=False, ctx=ctx,
                            runner=no_command, root=tmp_path)
    assert rc == flow.DONE and "(dry run: nothing was changed)" in con.text
    assert f"1. ERASE the disk {ZFS}" in con.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yml"]


def test_invalid_answers_change_nothing(tmp_path: Path) -> None:
    f = tmp_path / "a.yml"
    f.write_text(yml(disk=ZFS))  # data disk without erase
    with pytest.raises(plan.PlanError, match="set `erase: " + ZFS):
        flow.firstboot_run(Scripted([], []), answers_file=f, dry_run=False, yes=True, tty=False,
                           ctx=ctx, runner=no_command, root=tmp_path)
    f.write_text(yml(disk="/dev/sda"))
    with pytest.raises(answers.AnswersError):
        flow.firstboot_run(Scripted([], []), answers_file=f, dry_run=False, yes=True, tty=False,
                           ctx=ctx, runner=no_command, root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yml"]


def test_unattended_from_the_labeled_volume(tmp_path: Path) -> None:
    vol = tmp_path / "cfg"
    vol.mkdir()
    (vol / "anklume-answers.yml").write_text(yml(disk=EMPTY))
    rec = Recorder()
    con = Scripted([], [])
    rc = flow.firstboot_run(con, answers_file=None, dry_run=False, yes=False,
                            tty=False, ctx=ctx, volume_mounts=lambda: [vol], runner=rec,
                            root=tmp_path / "root")
    assert rc == flow.DONE and rec.argvs[0] == ["modprobe", "zfs"]
    # The volume still holds the passphrase: the console says to destroy it.
    assert "WARNING: anklume-answers.yml on the ANKLUME-CFG volume holds the pool's passphrase" \
        in con.text, con.text
    assert rec.argvs[1][:2] == ["zpool", "create"]
    # This boot's pool state, for the agent (it deploys only onto an unlocked pool).
    status = (tmp_path / "root/run/anklume/pool-status").read_text()
    assert "state=unlocked\n" in status and "backend=zfs\n" in status, status
    # the second run finds the marker and does nothing
    rc = flow.firstboot_run(Scripted([], []), answers_file=None, dry_run=False, yes=False,
                            tty=False, ctx=ctx, volume_mounts=lambda: [vol],
                            runner=no_command, root=tmp_path / "root")
    assert rc == flow.DONE


def test_skip_credential_leaves_the_labeled_volume_unread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine provisioned to stay in live mode: a volume someone plugged in is not even
    mounted, and says so; the answers credential (the provisioner's own) still counts."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / answers.SKIP_CREDENTIAL).write_text("1")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))

    def mounted() -> list[Path]:
        raise AssertionError("the ANKLUME-CFG volume was mounted")

    con = Scripted([], [])
    rc = flow.firstboot_run(con, answers_file=None, dry_run=False, yes=False, tty=False,
                            ctx=ctx, volume_mounts=mounted, runner=no_command,
                            root=tmp_path / "root")
    assert rc == flow.NO_ANSWERS and "ANKLUME-CFG is ignored" in con.text, con.text
    assert not (tmp_path / "root").exists()
    (creds / answers.CREDENTIAL).write_text(yml(disk=EMPTY))
    rec = Recorder()
    rc = flow.firstboot_run(Scripted([], []), answers_file=None, dry_run=False, yes=False,
                            tty=False, ctx=ctx, volume_mounts=mounted, runner=rec,
                            root=tmp_path / "root")
    assert rc == flow.DONE and rec.argvs[1][:2] == ["zpool", "create"]


def test_no_answers_and_no_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    con = Scripted([], [])
    assert flow.firstboot_run(con, answers_file=None, dry_run=False, yes=False, tty=False,
                              ctx=ctx, runner=no_command, root=tmp_path) == flow.NO_ANSWERS
    assert "no terminal" in con.text


def test_strength_feedback() -> None:
    assert passphrase.assess("short").rating == "too short"
    weak = passphrase.assess("password1234")
    assert weak.ok and weak.rating == "weak" and any("common words" in a for a in weak.advice)
    assert any("sequences" in a for a in passphrase.assess("abcdefgh!XYZ9").advice)
    assert passphrase.assess("Tr0mbone-glacier;velvet").rating == "strong"
    assert passphrase.problems(PASS, PASS + " ") == ["the two passphrases differ"]


def test_cli_dry_run_on_this_host_exits_2_for_an_unknown_disk(tmp_path: Path) -> None:
    """The real command: answers naming a disk this host does not have; exit 2, a message
    naming the file, nothing changed."""
    f = tmp_path / "a.yml"
    f.write_text(yml(disk="ata-NOT_ON_THIS_HOST_1"))
    anklume = Path(sys.executable).parent / "anklume"
    proc = subprocess.run([str(anklume), "firstboot", "run", "--answers", str(f), "--dry-run"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{f}: nothing was changed" in proc.stderr
    assert "no disk has the by-id name, WWN or serial 'ata-NOT_ON_THIS_HOST_1'" in proc.stderr


def test_the_wizard_hashes_root_password_with_yescrypt() -> None:
    """The hash chpasswd -e gets: yescrypt with a fresh salt each time, accepted by the answers
    file's own check, and the password verifies against it through libxcrypt (as login does)."""
    import ctypes
    import ctypes.util

    from anklume.firstboot import admin, wizard

    first, second = wizard.hash_password("correct horse"), wizard.hash_password("correct horse")
    assert first.startswith("$y$") and first != second, (first, second)
    assert admin.hash_problem(first) is None
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    assert lib.crypt(b"correct horse", first.encode()) == first.encode()
    assert lib.crypt(b"wrong horse", first.encode()) != first.encode()
