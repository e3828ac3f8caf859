"""`anklume firstboot run`: where the answers come from, the plan, the confirmation, apply.

Exit codes (docs/firstboot.md): 0 done, already done, or dry-run printed; 1 a step failed
(nothing after it ran, not marked done); 2 invalid answers or plan (nothing changed);
3 declined at the plan screen; 4 no answers and no terminal to ask on.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from anklume import exitcodes, paths
from anklume.firstboot import answers, apply, choices, diskref, incus_state
from anklume.firstboot import plan as plan_mod
from anklume.firstboot.console import Console
from anklume.firstboot.wizard import HashPassword, hash_password, run_wizard
from anklume.run import run as run_command

# The exit statuses of `anklume firstboot run` (anklume/exitcodes.py); FAILED is the one the
# console wizard returns on a failed step (cli.py). Assigned rather than imported: offer.py and
# cli.py import them from here, and strict mypy re-exports no imported name.
DONE = exitcodes.OK
DECLINED = exitcodes.NOTHING
FAILED = exitcodes.FAILED
NO_ANSWERS = exitcodes.NO_ANSWERS


def context() -> plan_mod.Context:
    """What the machine offers now (reads lsblk, /dev/disk/by-id, sysfs)."""
    from anklume.firstboot import detect
    from anklume.firstboot.recommend import recommend

    found = detect.block_devices()
    boot = next((d.path for d in found if d.image and d.mounts), None)
    gpus = detect.graphics()
    rec = recommend(gpus)
    tpm = Path("/sys/class/tpm/tpm0/tpm_version_major")
    return plan_mod.Context(
        tuple(found), diskref.read_by_id(), boot,
        tpm.exists() and tpm.read_text().strip() == "2",
        plan_mod.NewIds(str(uuid.uuid4()), str(uuid.uuid4())), rec.models, rec.reason,
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def firstboot_run(con: Console, *, answers_file: Path | None, dry_run: bool, yes: bool,
                  tty: bool, ctx: Callable[[], plan_mod.Context] = context,
                  volume_mounts: Callable[[], Sequence[Path]] = lambda: (),
                  runner: Callable[..., object] = run_command, root: Path = Path("/"),
                  hasher: HashPassword = hash_password) -> int:
    done = choices.load(root / paths.firstboot_record().relative_to("/"))
    if done is not None and done.done and not dry_run:
        con.say(f"The first boot is already done ({done.backend} pool {done.pool_name} on "
                f"{done.disk_by_id}); nothing to do.")
        return DONE
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if answers_file is None and not tty and answers.volume_refused(creds):
        con.say(f"A volume labelled {answers.VOLUME_LABEL} is ignored: this machine is "
                f"provisioned to stay in live mode ({answers.SKIP_CREDENTIAL} credential). "
                "No pool is made from it.")
        return NO_ANSWERS
    # The credential first: the volume is mounted only when it is the one left to read.
    path = answers_file or answers.find(creds, ())
    from_volume = False
    if path is None and not tty:
        path = answers.find(None, volume_mounts())
        from_volume = path is not None
    c = ctx()
    p: plan_mod.Plan | None
    if path is not None:
        p = plan_mod.make(answers.load(path), c)  # AnswersError/PlanError: exit 2, untouched
        con.say(p.text())
        if dry_run:
            con.say("(dry run: nothing was changed)")
            return DONE
        if tty and not yes:
            raw = con.ask("Go ahead? [y/N]").strip().lower()
            if raw not in ("y", "yes"):
                con.say("Declined; nothing was changed.")
                return DECLINED
    elif tty:
        p = run_wizard(con, c, hasher)
        if p is None:
            return DECLINED
        if dry_run:
            con.say("(dry run: nothing was changed)")
            return DONE
    else:
        con.say(f"No answers: no --answers file, no {answers.CREDENTIAL} credential, no "
                f"{answers.VOLUME_LABEL} volume with {answers.VOLUME_FILE}, and no terminal "
                "to ask on.")
        return NO_ANSWERS
    pool = p.answers.pool_name
    apply.apply(p, apply.secrets_of(p, incus_state.preseed(p.answers.backend, pool)),
                runner=runner, root=root, echo=con.say, show=con.show_once)
    # This boot's pool state, as unlock writes it at later boots: the agent deploys only onto
    # an unlocked pool.
    made = choices.load(root / paths.firstboot_record().relative_to("/"))
    if made is not None:
        from anklume.firstboot import unlock
        unlock.write_status("unlocked", "created by the first-boot wizard" if
                            p.answers.action == "create" else "imported by the first-boot wizard",
                            made, root / paths.pool_status_file().relative_to("/"))
    con.say("The data pool is ready; the first boot is done.")
    if from_volume:
        con.say(f"WARNING: {answers.VOLUME_FILE} on the {answers.VOLUME_LABEL} volume holds the "
                "pool's passphrase in plain text: erase the file (or the whole volume) now, and "
                "keep the volume away from this machine.")
    return DONE
