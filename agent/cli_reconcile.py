"""`anklume plan` and `anklume apply`: show and make the changes that reconcile Incus."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import typer
from anklume.agent.apply import Result
from anklume.agent.cli import PATH_ARG, load_or_exit
from anklume.agent.plan import Action, Op, Plan
from anklume.agent.resources import Kind

_SIGN = {Op.CREATE: "+", Op.UPDATE: "~", Op.DELETE: "-", Op.START: ">"}
_FW_SHOWN = 8  # firewall rule lines shown before "... and N more"

PRUNE = typer.Option(False, "--prune", help="Delete anklume's resources no longer declared.")
FORCE = typer.Option(False, "--force",
                     help="With --prune or --recreate, also delete instances protected "
                     "against deletion.")
DEFAULT_IMAGE = typer.Option(
    None, "--default-image", metavar="ALIAS",
    help="Image for machines without their own os_image (overrides global.default_os_image).")
RECREATE = typer.Option(
    False, "--recreate",
    help="Delete and create again the instances whose os_image changed (their data outside "
    "persistent_data and shared volumes is lost).")


def _show(v: str | None) -> str:
    return "(none)" if v is None else v


def format_action(a: Action) -> list[str]:
    head = f"{_SIGN[a.op]} {a.label}" if a.op is not Op.START else f"> start {a.label}"
    if a.needs_restart:
        head += "  (restart needed)"
    if a.op is Op.START and a.reason and a.reason != "new":
        head += f"  ({a.reason})"
    if a.op is Op.DELETE:
        head += f"  ({a.reason})" if a.reason else ""
    lines = [head]
    if a.kind is Kind.FIREWALL:
        rules = [("+ " + c.new) if c.new else ("- " + _show(c.old)) for c in a.changes]
        lines += [f"    {r}" for r in rules[:_FW_SHOWN]]
        if len(rules) > _FW_SHOWN:
            lines.append(f"    ... and {len(rules) - _FW_SHOWN} more rule changes")
    elif a.op is Op.CREATE:
        lines += [f"    {c.key} = {_show(c.new)}" for c in a.changes]
    elif a.op is Op.UPDATE:
        lines += [f"    {c.key}: {_show(c.old)} -> {_show(c.new)}" for c in a.changes]
    return lines


def format_plan(p: Plan) -> str:
    out: list[str] = []
    for level in p.levels():
        for a in level:
            out += format_action(a)
    for n in p.kept:
        out.append(f"= kept {n.label}: {n.reason}")
    for n in p.conflicts:
        out.append(f"! {n.label}: {n.reason}")
    if not p.actions:
        out.append(p.why_empty())
    else:
        counts = {op: sum(1 for a in p if a.op is op) for op in Op}
        out.append("Plan: " + ", ".join(f"{n} to {op.value}" for op, n in counts.items() if n))
    return "\n".join(out)


def format_result(r: Result) -> str:
    out = [f"error: {o.action.op.value} {o.action.label}: {o.error}" for o in r.failed]
    out += [f"skipped: {o.action.op.value} {o.action.label}: {o.skipped}" for o in r.skipped]
    out.append(f"Applied {len(r.done)} changes in {r.seconds:.1f} s"
               + (f", {len(r.failed)} failed" if r.failed else "")
               + (f", {len(r.skipped)} skipped" if r.skipped else ""))
    return "\n".join(out)


def plan_cmd(path: Path | None = PATH_ARG, prune: bool = PRUNE, force: bool = FORCE,
             default_image: str | None = DEFAULT_IMAGE, recreate: bool = RECREATE) -> None:
    """Show what `apply` would change, as a diff (+ create, ~ update, - delete, > start)."""
    from anklume.agent.reconcile import reconcile

    infra = load_or_exit(path)
    report = reconcile(infra, prune=prune, force=force, dry_run=True, default_image=default_image,
                       recreate=recreate)
    typer.echo(format_plan(report.plan))
    _echo_problems(report.problems)


def apply_cmd(path: Path | None = PATH_ARG, prune: bool = PRUNE, force: bool = FORCE,
              dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan only."),
              recreate: bool = RECREATE,
              default_image: str | None = DEFAULT_IMAGE,
              no_wait: bool = typer.Option(
                  False, "--no-wait",
                  help="Fail at once (exit 75) when another apply is running.")) -> None:
    """Make Incus and nftables match infra.yml; exit 1 if any resource failed. One apply runs
    at a time (shared with the boot agent): this waits for a running one, or with --no-wait
    exits 75 naming it."""
    from anklume.agent.reconcile import reconcile

    infra = load_or_exit(path)
    if dry_run:  # reads only: no need to wait for a running apply
        report = reconcile(infra, prune=prune, force=force, dry_run=True,
                           default_image=default_image, recreate=recreate)
    else:
        with _apply_lock(no_wait):
            report = reconcile(infra, prune=prune, force=force, default_image=default_image,
                               recreate=recreate)
    typer.echo(format_plan(report.plan))
    _echo_problems(report.problems)
    if report.problems:
        typer.echo("Nothing applied: fix the problems above first")
    elif report.result is None:
        typer.echo("Dry run: nothing changed")
    elif report.plan.actions:
        typer.echo(format_result(report.result))
    if not report.ok:
        raise typer.Exit(1)


def _apply_lock(no_wait: bool) -> AbstractContextManager[None]:
    import shlex
    import sys

    from anklume.agent.lock import apply_lock

    def waiting(holder) -> None:
        typer.echo(f"waiting for {holder.describe()}", err=True)

    return apply_lock(shlex.join(["anklume", *sys.argv[1:]]), wait=not no_wait,
                      on_wait=waiting)


def _echo_problems(problems: tuple[str, ...]) -> None:
    for msg in problems:
        typer.echo(f"error: {msg}", err=True)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_cmd)
    app.command("apply")(apply_cmd)
