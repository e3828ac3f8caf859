"""The interactive first boot: the same Answers the file gives, then the same plan.

Every question loops until its answer is valid, so a typo costs a retype, never a wrong disk.
"""

from __future__ import annotations

from collections.abc import Callable

from anklume.firstboot import admin, answers, diskref, passphrase
from anklume.firstboot import plan as plan_mod
from anklume.firstboot.console import Console
from anklume.firstboot.disks import Disk

GiB = 1024**3
HashPassword = Callable[[str], str]


def hash_password(password: str) -> str:
    """Root's password as a yescrypt hash ($y$, Debian's own default) with a fresh salt."""
    return admin.yescrypt(password)


def _choose(con: Console, prompt: str, options: list[str], default: int | None = None) -> int:
    for i, text in enumerate(options, 1):
        con.say(f"  {i}) {text}")
    while True:
        raw = con.ask(prompt + (f" [{default + 1}]" if default is not None else ""))
        if not raw and default is not None:
            return default
        if raw.isdigit() and 1 <= int(raw) <= len(options):
            return int(raw) - 1
        con.say(f"Type a number from 1 to {len(options)}.")


def _yes(con: Console, prompt: str, default: bool) -> bool:
    raw = con.ask(prompt + (" [Y/n]" if default else " [y/N]")).lower()
    return default if not raw else raw in ("y", "yes", "o", "oui")


def _passphrase(con: Console, confirm: bool) -> str:
    while True:
        first = con.secret("Passphrase for the data pool:")
        s = passphrase.assess(first)
        if not s.ok:
            con.say("Too short: " + "; ".join(s.advice))
            continue
        con.say(f"Strength: {s.rating}" + (" (" + "; ".join(s.advice) + ")" if s.advice else ""))
        if s.rating == "weak" and not _yes(con, "Use it anyway?", False):
            continue
        if not confirm:
            return first
        if con.secret("The same passphrase again:") == first:
            return first
        con.say("The two passphrases differ; start again.")


def _admin(con: Console, hasher: HashPassword) -> answers.Admin:
    con.say("Administrator: after this, root logs in only with these credentials.")
    while True:
        keys: list[str] = []
        line = con.ask("SSH public key for root (paste one line, Enter for none):")
        if line:
            why = admin.key_problem(line)
            if why:
                con.say(f"Not an SSH public key: {why}")
                continue
            keys.append(line)
        root_hash = None
        if _yes(con, "Set a root password (console login)?", not keys):
            while True:
                pw = con.secret("Root password:")
                if len(pw) < 8:
                    con.say("Use at least 8 characters.")
                    continue
                if con.secret("Root password again:") == pw:
                    break
                con.say("The two passwords differ.")
            root_hash = hasher(pw)
        if keys or root_hash:
            return answers.Admin(root_hash, tuple(keys))
        con.say("Give an SSH key or a root password: otherwise nobody could log in.")


def _label(d: Disk, ref: str) -> str:
    what = " ".join(x for x in (d.model, d.serial and f"serial {d.serial}") if x) or "no model"
    now = (f"existing {d.existing_pool} pool" if d.existing_pool
           else "empty" if d.empty else "has data: " + ",".join(d.signatures))
    return f"{ref}  {d.size / GiB:.1f} GiB  {what}  [{now}]"


def run_wizard(con: Console, ctx: plan_mod.Context,
               hasher: HashPassword = hash_password) -> plan_mod.Plan | None:
    """The confirmed plan, or None when the user declined at the plan screen."""
    pool_disks = [(d, diskref.links_of(d, ctx.by_id)) for d in ctx.disks if d.candidate]
    offered = [(d, links[0]) for d, links in pool_disks if links]
    if not offered:
        con.say("No disk can hold the data pool (it needs at least 4 GiB and a stable "
                "/dev/disk/by-id name). Add one and run `anklume firstboot run`.")
        return None
    if ctx.gpu_reason:
        con.say(f"GPU: {ctx.gpu_reason}; local models: "
                f"{', '.join(ctx.gpu_models) or 'none (API-only)'}")
    importable = [(d, r) for d, r in offered if d.existing_pool]
    action = "create"
    if importable:
        con.say("What should the data pool be?")
        action = ("create", "import")[_choose(
            con, "Choice:", ["Create a new pool (erases the chosen disk)",
                             "Import an existing anklume pool (keeps its data)"], 0)]
    while True:
        pool = offered if action == "create" else importable
        con.say("Disk for the data pool:")
        disk, ref = pool[_choose(con, "Disk:", [_label(d, r) for d, r in pool])]
        if action == "create":
            con.say("Backend:")
            backend = ("zfs", "luks-btrfs")[_choose(con, "Backend:", [
                "ZFS (recommended: native encryption, a dataset per domain, compression)",
                "LUKS2 + btrfs (a subvolume per domain)"], 0)]
        else:
            backend = "zfs" if disk.existing_pool == "zfs" else "luks-btrfs"
        secret = _passphrase(con, confirm=action == "create")
        tpm2 = "no"
        if ctx.tpm_present and _yes(con, "Unlock automatically with this machine's TPM2?",
                                    True):
            tpm2 = "yes"
        who = _admin(con, hasher)
        erase = None
        if action == "create" and not disk.empty:
            erase = ref  # confirmed below by typing it
        a = answers.Answers(action=action, backend=backend, disk=ref, passphrase=secret,
                            admin=who, tpm2=tpm2, erase=erase)
        try:
            p = plan_mod.make(a, ctx)
        except plan_mod.PlanError as e:
            con.say(str(e))
            continue
        con.say("")
        con.say(p.text())
        con.say("")
        if p.erases:
            typed = con.ask(f"This ERASES {ref}. Type its name to confirm "
                            "(anything else goes back):")
            if typed.strip() not in (ref, f"/dev/disk/by-id/{ref}"):
                con.say("Not confirmed; nothing was changed.")
                if not _yes(con, "Choose again?", True):
                    return None
                continue
        elif not _yes(con, "Go ahead?", False):
            return None
        return p
