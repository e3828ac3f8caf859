"""Later boots: the unlock decisions (pure), the unlock loop against a fake pool (failure
injection only), the status file, and real LUKS2 on a plain file (format, dump, right and
wrong passphrase) where cryptsetup exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from anklume import pool_status
from anklume.firstboot import choices, pool_luks, unlock
from anklume.firstboot.unlock import CONTINUE, MISSING, OK, RETRY, WRONG, decide
from anklume.pool_status import PoolStatus
from anklume.run import run

C = choices.Choices("zfs", "anklume", "ata-X_1", zpool_guid="42", done=True)


def test_decisions() -> None:
    assert decide([]).kind == "ask"
    assert decide([WRONG]) == unlock.Decision("ask", "wrong passphrase (try 2 of 3)")
    assert decide([WRONG, WRONG, OK]).kind == "unlocked"
    offer = decide([WRONG, WRONG, WRONG])
    assert offer.kind == "offer" and "retry" in offer.message
    assert decide([WRONG, WRONG, WRONG, RETRY]).kind == "ask"
    assert decide([WRONG, WRONG, WRONG, RETRY, WRONG]).message == "wrong passphrase (try 2 of 3)"
    assert decide([WRONG] * 3 + [RETRY] + [WRONG] * 3).kind == "offer"
    gone = decide([WRONG, WRONG, WRONG, CONTINUE])
    assert gone.kind == "degraded" and "after 3 tries" in gone.message
    missing = decide([MISSING], "ata-X_1")
    assert missing == unlock.Decision("degraded", "data disk not found: ata-X_1")


class FakePool:
    def __init__(self, right: str = "right", present: bool = True, tpm: bool = False) -> None:
        self.right, self.present, self.tpm = right, present, tpm
        self.tries: list[str] = []
        self.mounted = False

    def locate(self) -> tuple[str, str]:
        return (OK, "") if self.present else (MISSING, "ata-X_1 (pool GUID 42)")

    def already_unlocked(self) -> bool:
        return False

    def try_tpm2(self) -> bool:
        return self.tpm

    def try_passphrase(self, secret: str) -> tuple[str, str]:
        self.tries.append(secret)
        return (OK, "") if secret == self.right else (WRONG, "")

    def mount(self) -> None:
        self.mounted = True


def script(*typed: str | None):
    it = iter(typed)
    prompts: list[str] = []

    def ask(prompt: str) -> str | None:
        prompts.append(prompt)
        return next(it)
    return ask, prompts


def run_main(tmp_path: Path, pool: FakePool, *typed: str | None) -> tuple[int, str, list[str]]:
    path = tmp_path / "firstboot.json"
    choices.save(C, path)
    status = tmp_path / "run/pool-status"
    ask, _ = script(*typed)
    said: list[str] = []
    rc = unlock.main(path, status, pool, ask, said.append)
    return rc, status.read_text() if status.exists() else "", said


def test_wrong_wrong_right_unlocks(tmp_path: Path) -> None:
    pool = FakePool()
    rc, status, said = run_main(tmp_path, pool, "a", "b", "right")
    assert rc == 0 and pool.tries == ["a", "b", "right"] and pool.mounted
    assert "state=unlocked\n" in status and "pool_id=42\n" in status
    assert said[:2] == ["wrong passphrase (try 2 of 3)", "wrong passphrase (try 3 of 3)"]


def test_three_wrong_then_continue_is_degraded_and_exit_0(tmp_path: Path) -> None:
    pool = FakePool()
    rc, status, said = run_main(tmp_path, pool, "a", "b", "c", "")
    assert rc == 0 and not pool.mounted and len(pool.tries) == 3
    assert "state=degraded\n" in status and "after 3 tries" in status
    assert said[-1].startswith("DEGRADED:")


def test_three_wrong_retry_then_right(tmp_path: Path) -> None:
    pool = FakePool()
    rc, status, _ = run_main(tmp_path, pool, "a", "b", "c", "retry", "right")
    assert rc == 0 and "state=unlocked" in status and pool.tries[-1] == "right"


def test_missing_disk_is_degraded_without_asking(tmp_path: Path) -> None:
    pool = FakePool(present=False)
    rc, status, _ = run_main(tmp_path, pool)  # any prompt would raise StopIteration
    assert rc == 0 and pool.tries == []
    assert "state=degraded\nreason=data disk not found: ata-X_1 (pool GUID 42)\n" in status


def test_tpm2_unlocks_without_a_prompt(tmp_path: Path) -> None:
    pool = FakePool(tpm=True)
    rc, status, _ = run_main(tmp_path, pool)
    assert rc == 0 and pool.tries == [] and "state=unlocked" in status


def test_no_console_answer_degrades_instead_of_spinning(tmp_path: Path) -> None:
    rc, status, _ = run_main(tmp_path, FakePool(), None)
    assert rc == 0 and "state=degraded" in status


def test_a_missing_tool_is_degraded_not_a_failed_boot(tmp_path: Path) -> None:
    class NoTools(FakePool):
        def locate(self) -> tuple[str, str]:
            raise FileNotFoundError(2, "No such file or directory", "zpool")

    rc, status, _ = run_main(tmp_path, NoTools())
    assert rc == 0 and "state=degraded\nreason=unlock failed:" in status and "zpool" in status


def test_nothing_to_unlock_before_the_wizard(tmp_path: Path) -> None:
    said: list[str] = []
    assert unlock.main(tmp_path / "none.json", tmp_path / "s", FakePool(), script()[0],
                       said.append) == 3
    assert not (tmp_path / "s").exists()


def test_the_status_file_reads_back_as_written(tmp_path: Path) -> None:
    """The writer and its one reader (the agent, `firstboot status`) agree; a reason never
    spills onto a second line, and a file without a state reads as not unlocked."""
    status = tmp_path / "pool-status"
    assert pool_status.read(status) is None
    unlock.write_status("degraded", "3 wrong\npassphrases", C, status)
    assert status.read_text() == ("state=degraded\nreason=3 wrong passphrases\nbackend=zfs\n"
                                  "pool=anklume\npool_id=42\ndisk=ata-X_1\n")
    got = pool_status.read(status)
    assert got == PoolStatus("degraded", "3 wrong passphrases", "zfs", "anklume", "42",
                             "ata-X_1") and not got.unlocked
    assert got.to_text() == status.read_text()
    assert pool_status.parse("reason=a=b\njunk\n") == PoolStatus("", "a=b")


def test_tool_results_are_classified() -> None:
    assert unlock.zfs_result(255, "Key load error: Incorrect key provided for 'p'.") == (WRONG, "")
    assert unlock.zfs_result(1, "cannot open 'p': no such pool\n") == (
        unlock.ERROR, "cannot open 'p': no such pool")
    assert unlock.luks_result(2, "No key available with this passphrase.") == (WRONG, "")


# --- real LUKS2 on a plain file (no device-mapper needed) --------------------------------------


@pytest.mark.skipif(shutil.which("cryptsetup") is None,
                    reason="cryptsetup is not installed here (Debian package cryptsetup-bin)")
def test_real_luks2_format_dump_and_passphrase_check(tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    with img.open("wb") as f:
        f.truncate(64 * 1024**2)
    uuid = "0f0e0d0c-0b0a-4909-8807-060504030201"
    secret = "correct horse battery staple"
    fmt = pool_luks.format_(str(img), uuid)
    run(list(fmt.argv), input=secret, timeout=120)
    dump = " ".join(run(["cryptsetup", "luksDump", str(img)]).stdout.split())
    assert "Version: 2 " in dump and f"UUID: {uuid} " in dump
    assert "PBKDF: argon2id " in dump
    # a cap, not a fixed cost: cryptsetup's benchmark may choose less on a slow or busy machine
    memory = int(re.search(r"Memory: (\d+) ", dump).group(1))  # type: ignore[union-attr]
    assert 0 < memory <= pool_luks.PBKDF_MEMORY_KIB
    assert "Label: anklume-data " in dump
    check = pool_luks.test_passphrase(str(img))
    ok = run(list(check.argv), input=secret, check=False, timeout=120)
    assert unlock.luks_result(ok.returncode, ok.stderr) == (OK, "")
    bad = run(list(check.argv), input=secret + "x", check=False, timeout=120)
    assert unlock.luks_result(bad.returncode, bad.stderr) == (WRONG, "")
    # a trailing newline is a different key: what the wizard stores must be what is typed
    nl = run(list(check.argv), input=secret + "\n", check=False, timeout=120)
    assert nl.returncode == 2


@pytest.mark.skipif(shutil.which("mkfs.btrfs") is None, reason="btrfs-progs is not installed")
def test_real_mkfs_btrfs_with_the_chosen_uuid(tmp_path: Path) -> None:
    img = tmp_path / "fs.img"
    with img.open("wb") as f:
        f.truncate(256 * 1024**2)
    uuid = "11111111-2222-4333-8444-555555555555"
    argv = list(pool_luks.mkfs(uuid).argv)
    argv[-1] = str(img)  # the mapped device on the appliance; a plain file here
    run(argv)
    out = subprocess.run(["blkid", "-s", "UUID", "-o", "value", str(img)], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == uuid
