"""Run a plan step by step through the one command choke point; stop at the first failure.

`done` is recorded only by the last step, so a machine that failed half-way boots into the
wizard again (and its message names the step that failed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from anklume import atomic, exitcodes, log, paths
from anklume.errors import AnklumeError, PermanentError
from anklume.firstboot import choices, console
from anklume.firstboot.plan import Plan
from anklume.firstboot.steps import Command, Record, WriteFile
from anklume.run import run as run_command

_log = log.get("firstboot")
Runner = Callable[..., object]  # anklume.run.run's signature


class StepFailed(PermanentError):
    exit_code = exitcodes.FAILED


def secrets_of(plan: Plan, preseed: str | None = None) -> dict[str, str]:
    a = plan.answers
    out = {"passphrase": a.passphrase}
    if a.admin.root_password_hash:
        out["root_hash_line"] = f"root:{a.admin.root_password_hash}\n"
    if preseed is not None:
        out["preseed"] = preseed
    return out


def _record(action: Record, captured: Mapping[str, str], root: Path) -> None:
    values: dict[str, object] = {}
    for name, raw in action.fields:
        values[name] = captured.get(raw[1:], "") if raw.startswith("@") else raw
    values["tpm2"] = values.get("tpm2") == "yes"
    values["gpu_models"] = tuple(m for m in str(values.get("gpu_models", "")).split(",") if m)
    known = {f.name for f in fields(choices.Choices)}
    # Choices' fields by name: their types differ, which one dict value type cannot say.
    kw: dict[str, Any] = {k: v or None if k in ("zpool_guid", "luks_uuid", "btrfs_uuid") else v
                          for k, v in values.items() if k in known}
    c = choices.Choices(**kw, done=True)
    choices.save(c, root / paths.firstboot_record().relative_to("/"))


def apply(plan: Plan, secrets: Mapping[str, str], *, runner: Runner = run_command,
          root: Path = Path("/"), echo: Callable[[str], None] = print,
          show: Callable[[str], object] = console.show_once) -> None:
    """`root` prefixes every file written (tests); commands always run as given. `echo` may be
    logged (the unattended unit's stdout is the journal); `show` must not be."""
    captured: dict[str, str] = {}
    for n, step in enumerate(plan.steps, 1):
        echo(f"[{n}/{len(plan.steps)}] {step.title}")
        log.event(_log, "Firstboot step", step=step.key)
        try:
            for action in step.actions:
                if isinstance(action, Command):
                    stdin = secrets[action.stdin] if action.stdin else None
                    proc = runner(list(action.argv), input=stdin, check=action.check)
                    out = str(getattr(proc, "stdout", "") or "")
                    if action.capture_as:
                        captured[action.capture_as] = out.strip()
                    if action.show_output:
                        show(f"{action.show_output}\n\n    {out.strip()}\n")
                elif isinstance(action, WriteFile):
                    path = root / Path(action.path).relative_to("/")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.parent.chmod(action.dir_mode)
                    atomic.write_text(path, action.content, mode=action.mode)
                elif isinstance(action, Record):
                    _record(action, captured, root)
        except (AnklumeError, OSError) as e:
            log.event(_log, "Firstboot step failed", logging.ERROR, step=step.key)
            raise StepFailed(f"step {n} ({step.key}: {step.title}) failed: {e}",
                             hint="nothing after this step ran and the first boot is not "
                                  "marked done; fix the cause and run `anklume firstboot run` "
                                  "again") from None
    log.event(_log, "Firstboot done", backend=plan.answers.backend, steps=len(plan.steps))
