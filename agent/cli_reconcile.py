"""`anklume plan` and `anklume apply`: show and make the changes that reconcile Incus."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import typer

from anklume import exitcodes
from anklume.agent.cli_common import PATH_ARG, load_or_exit
from anklume.agent.cli_remote import HOST, IDENTITY, PORT, SSH_OPTIONS, run_on_host

# The planning modules load in the commands, not here: every `anklume` run (the health gate at
# each boot too) registers these commands, and under emulation each import costs seconds.

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

app = typer.Typer()


def _flags(prune: bool, force: bool, recreate: bool, default_image: str | None) -> list[str]:
    # The same choices, passed on to the appliance's `anklume agent receive`.
    return [*(["--prune"] if prune else []), *(["--force"] if force else []),
            *(["--recreate"] if recreate else []),
            *(["--default-image", default_image] if default_image else [])]


@app.command("plan")
def plan_cmd(path: Path | None = PATH_ARG, prune: bool = PRUNE, force: bool = FORCE,
             default_image: str | None = DEFAULT_IMAGE, recreate: bool = RECREATE,
             host: str | None = HOST, port: int | None = PORT, identity: Path | None = IDENTITY,
             ssh_option: list[str] = SSH_OPTIONS) -> None:
    """Show what `apply` would change, as a diff (+ create, ~ update, - delete, > start)."""
    if host is not None:
        run_on_host(path, host, apply=False, flags=_flags(prune, force, recreate, default_image),
                    port=port, identity=identity, options=ssh_option)
        return
    from anklume.agent.plan_text import format_plan
    from anklume.agent.reconcile import reconcile

    infra = load_or_exit(path)
    report = reconcile(infra, prune=prune, force=force, dry_run=True, default_image=default_image,
                       recreate=recreate)
    typer.echo(format_plan(report.plan))
    _echo_problems(report.problems)


@app.command("apply")
def apply_cmd(path: Path | None = PATH_ARG, prune: bool = PRUNE, force: bool = FORCE,
              dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan only."),
              recreate: bool = RECREATE,
              default_image: str | None = DEFAULT_IMAGE,
              no_wait: bool = typer.Option(
                  False, "--no-wait",
                  help="Fail at once (exit 75) when another apply is running."),
              host: str | None = HOST, port: int | None = PORT,
              identity: Path | None = IDENTITY, ssh_option: list[str] = SSH_OPTIONS,
              yes: bool = typer.Option(False, "--yes", "-y",
                                       help="With --host: apply without asking.")) -> None:
    """Make Incus and nftables match infra.yml; exit 1 if any resource failed. One apply runs
    at a time (shared with the boot agent): this waits for a running one, or with --no-wait
    exits 75 naming it. With --host: validated here, the appliance's plan shown, then on
    confirmation installed there (where its agent reads infra.yml) and applied."""
    if host is not None:
        if dry_run:
            run_on_host(path, host, apply=False, port=port, identity=identity,
                        options=ssh_option, flags=_flags(prune, force, recreate, default_image))
            return
        run_on_host(path, host, apply=True, yes=yes, port=port, identity=identity,
                    options=ssh_option, flags=_flags(prune, force, recreate, default_image))
        return
    from anklume.agent.plan_text import format_plan, format_result
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
        raise typer.Exit(exitcodes.FAILED)


def _apply_lock(no_wait: bool) -> AbstractContextManager[None]:
    import shlex
    import sys

    from anklume.agent.lock import Holder, apply_lock

    def waiting(holder: Holder) -> None:
        typer.echo(f"waiting for {holder.describe()}", err=True)

    return apply_lock(shlex.join(["anklume", *sys.argv[1:]]), wait=not no_wait,
                      on_wait=waiting)


def _echo_problems(problems: tuple[str, ...]) -> None:
    for msg in problems:
        typer.echo(f"error: {msg}", err=True)

