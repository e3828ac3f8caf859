"""Every later boot: find the pool by its stable id, unlock it, mount Incus's state.

Never a failed boot, never a hang on a mistake: a wrong passphrase asks again; after
MAX_TRIES the user chooses retry or continue; a missing disk or refusal ends in a *degraded*
state written to /run/anklume/pool-status, and the command still exits 0, so a mistyped
passphrase never triggers the boot counter's rollback. `decide` is the pure part.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from anklume import exitcodes, log, paths, pool_status
from anklume.errors import AnklumeError, CommandError
from anklume.firstboot import choices as choices_mod
from anklume.firstboot import pool_luks, pool_zfs, vault
from anklume.firstboot.steps import Command
from anklume.pool_status import PoolStatus
from anklume.run import run

_log = log.get("firstboot")
MAX_TRIES = 3
PROMPT = "Passphrase for the anklume data pool:"
ASK_ID = "anklume-pool"

# Results of one attempt, and the user's answers to the offer.
OK, WRONG, MISSING, ERROR, RETRY, CONTINUE = (
    "ok", "wrong", "missing", "error", "retry", "continue")


@dataclass(frozen=True)
class Decision:
    kind: str  # "ask" | "offer" | "unlocked" | "degraded"
    message: str = ""


def decide(history: Sequence[str], detail: str = "") -> Decision:
    """The next thing to do after these attempt results (oldest first)."""
    if not history:
        return Decision("ask")
    last = history[-1]
    if last == OK:
        return Decision("unlocked", "the data pool is unlocked")
    if last == MISSING:
        return Decision("degraded", f"data disk not found{': ' + detail if detail else ''}")
    if last == ERROR:
        return Decision("degraded", f"the pool could not be opened: {detail}")
    if last == CONTINUE:
        return Decision("degraded", f"no correct passphrase after {history.count(WRONG)} tries; "
                                    "continued without the pool")
    since = history[len(history) - history[::-1].index(RETRY):] if RETRY in history else history
    wrong = since.count(WRONG)
    if wrong >= MAX_TRIES:
        return Decision("offer", f"{wrong} wrong passphrases. Type 'retry' to try again; "
                                 "anything else continues without the data pool (degraded)")
    if last == WRONG:
        return Decision("ask", f"wrong passphrase (try {wrong + 1} of {MAX_TRIES})")
    return Decision("ask")


class Pool(Protocol):
    def locate(self) -> tuple[str, str]: ...  # (OK | MISSING | ERROR, detail)
    def already_unlocked(self) -> bool: ...
    def try_tpm2(self) -> bool: ...
    def try_passphrase(self, secret: str) -> tuple[str, str]: ...
    def mount(self) -> None: ...


Ask = Callable[[str], str | None]  # prompt -> typed text (None: no answer)


def write_status(state: str, reason: str, c: choices_mod.Choices,
                 path: Path | None = None) -> None:
    pool_status.write(PoolStatus(state, reason, c.backend, c.pool_name,
                                 c.zpool_guid or c.luks_uuid or "", c.disk_by_id), path)


def unlock(pool: Pool, ask: Ask, say: Callable[[str], None]) -> Decision:
    """Drive `decide` with real attempts; returns the final decision (unlocked or degraded)."""
    history: list[str] = []
    result, detail = pool.locate()
    if result != OK:
        history.append(result)
    elif pool.already_unlocked() or pool.try_tpm2():
        history.append(OK)
    while True:
        d = decide(history, detail)
        if d.kind in ("unlocked", "degraded"):
            if history[-1] == OK:
                try:
                    pool.mount()
                except CommandError as e:
                    return Decision("degraded", f"unlocked, but mounting failed: {e}")
            return d
        if d.message:
            say(d.message)
        if d.kind == "offer":
            answer = (ask("Type 'retry' to try again, or press Enter to continue without "
                          "the pool:") or "").strip().lower()
            history.append(RETRY if answer == "retry" else CONTINUE)
            continue
        secret = ask(PROMPT)
        if secret is None:  # no console answered: do not spin
            history.append(CONTINUE)
            continue
        result, detail = pool.try_passphrase(secret)
        history.append(result)


def ask_password(prompt: str) -> str | None:
    proc = run(["systemd-ask-password", "--timeout=0", "--echo=no", f"--id={ASK_ID}",
                prompt], check=False)
    return proc.stdout.removesuffix("\n") if proc.returncode == 0 else None


def luks_result(returncode: int, stderr: str) -> tuple[str, str]:
    """cryptsetup open / --test-passphrase: 2 is "No key available with this passphrase"."""
    if returncode == 0:
        return OK, ""
    if returncode == 2:
        return WRONG, ""
    return ERROR, stderr.strip()


def zfs_result(returncode: int, stderr: str) -> tuple[str, str]:
    if returncode == 0:
        return OK, ""
    if "incorrect key" in stderr.lower():  # "Key load error: Incorrect key provided for 'p'."
        return WRONG, ""
    return ERROR, stderr.strip()


class ZfsPool:
    def __init__(self, c: choices_mod.Choices) -> None:
        self.c = c

    def _imported(self) -> bool:
        proc = run(["zpool", "list", "-H", "-o", "guid"], check=False)
        return self.c.zpool_guid in proc.stdout.split()

    def locate(self) -> tuple[str, str]:
        mod = run(list(pool_zfs.load_module().argv), check=False)
        if mod.returncode != 0:
            return ERROR, f"the ZFS module does not load: {mod.stderr.strip()}"
        if self._imported():
            return OK, ""
        proc = run(list(pool_zfs.import_by_guid(self.c.zpool_guid or "").argv), check=False)
        if proc.returncode == 0:
            return OK, ""
        if "no such pool" in proc.stderr:
            return MISSING, f"{self.c.disk_by_id} (pool GUID {self.c.zpool_guid})"
        return ERROR, proc.stderr.strip()

    def already_unlocked(self) -> bool:
        proc = run(list(pool_zfs.key_status(self.c.pool_name).argv), check=False)
        return proc.stdout.strip() == "available"

    def try_tpm2(self) -> bool:
        cred = paths.pool_key_cred()
        if not self.c.tpm2 or not cred.exists():
            return False
        proc = run(["systemd-creds", "decrypt", "--name=anklume-pool", str(cred), "-"],
                   check=False)
        return proc.returncode == 0 and self.try_passphrase(proc.stdout)[0] == OK

    def try_passphrase(self, secret: str) -> tuple[str, str]:
        proc = run(list(pool_zfs.load_key(self.c.pool_name).argv), input=secret, check=False)
        return zfs_result(proc.returncode, proc.stderr)

    def mount(self) -> None:
        incus = f"{self.c.pool_name}/{pool_zfs.DATASET_INCUS}"
        if not pool_zfs.dataset_exists(incus):
            raise CommandError(["zfs", "list", incus], 1, f"dataset {incus} is missing")
        run(["mkdir", "-p", paths.INCUS_DIR])
        run(list(pool_zfs.mount_incus(self.c.pool_name, paths.INCUS_DIR).argv))
        for cmd in vault.mount("zfs", self.c.pool_name):
            run(list(cmd.argv))


class LuksPool:
    def __init__(self, c: choices_mod.Choices) -> None:
        self.c = c
        self.dev = pool_luks.by_uuid(c.luks_uuid or "")

    def locate(self) -> tuple[str, str]:
        if Path(self.dev).exists():
            return OK, ""
        return MISSING, f"{self.c.disk_by_id} (LUKS UUID {self.c.luks_uuid})"

    def already_unlocked(self) -> bool:
        return Path(pool_luks.MAPPED).exists()

    def try_tpm2(self) -> bool:
        if not self.c.tpm2:
            return False
        proc = run(["/usr/lib/systemd/systemd-cryptsetup", "attach", pool_luks.MAPPER,
                    self.dev, "-", "tpm2-device=auto,headless=true"], check=False)
        return proc.returncode == 0

    def try_passphrase(self, secret: str) -> tuple[str, str]:
        proc = run(list(pool_luks.open_(self.dev).argv), input=secret, check=False)
        return luks_result(proc.returncode, proc.stderr)

    def mount(self) -> None:
        for cmd in (*pool_luks.mount_top(), Command(("mkdir", "-p", paths.INCUS_DIR)),
                    pool_luks.mount_incus(paths.INCUS_DIR), *vault.mount("luks", "")):
            run(list(cmd.argv))


def _run_quiet(argv: list[str]) -> tuple[int, str]:
    proc = run(argv, check=False)
    return proc.returncode, proc.stderr


def pool_for(c: choices_mod.Choices) -> Pool:
    return ZfsPool(c) if c.backend == "zfs" else LuksPool(c)


DISK_WAIT_S = 30.0  # udev may still be announcing disks when the unit starts


def wait_for_disk(by_id: str, timeout: float = DISK_WAIT_S, *,
                  by_id_dir: Path = Path("/dev/disk/by-id"),
                  sleep: Callable[[float], None] = time.sleep) -> bool:
    """True once /dev/disk/by-id/<by_id> exists; False after `timeout` (then: missing)."""
    deadline = time.monotonic() + timeout
    while not (by_id_dir / by_id).exists():
        if time.monotonic() >= deadline:
            return False
        sleep(0.5)
    return True


def main(choices_path: Path | None = None, status: Path | None = None,
         pool: Pool | None = None, ask: Ask = ask_password,
         say: Callable[[str], None] = print) -> int:
    """`anklume firstboot unlock`: always 0 once the state is written (degraded is reported,
    not a failed boot); 3 only when the wizard never ran (nothing to unlock)."""
    c = choices_mod.load(choices_path)
    if c is None or not c.done:
        say("the first-boot wizard has not finished: no data pool to unlock")
        return exitcodes.NOTHING
    if pool is None and not wait_for_disk(c.disk_by_id):
        say(f"waited {DISK_WAIT_S:g} s for the data disk {c.disk_by_id}: not there")
    try:
        d = unlock(pool or pool_for(c), ask, say)
    except (OSError, AnklumeError) as e:  # a tool missing or refusing: report, never fail boot
        d = Decision("degraded", f"unlock failed: {e}")
    state = "unlocked" if d.kind == "unlocked" else "degraded"
    tampered = vault.ignored()
    if tampered:
        say(vault.tamper_message(tampered))
        log.event(_log, "Ignored on the persistent partition", logging.WARNING,
                  names=",".join(tampered))
    if state == "unlocked" and pool is None:  # (a pool given by a test touches no system)
        vault.after_unlock(_run_quiet, say)
    write_status(state, d.message, c, status)
    log.event(_log, "Pool " + state, reason=d.message, backend=c.backend)
    say("Data pool unlocked." if state == "unlocked" else
         f"DEGRADED: {d.message}. Compartments on the data pool are unavailable at this "
         "boot; reboot to try again.")
    return exitcodes.OK
