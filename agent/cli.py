"""Agent commands. Each command is one function registered in `register`; `load_or_exit` is
the shared way for a command to get a validated Infra."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from anklume.agent.model import Infra

PATH_ARG = typer.Argument(
    None, help="infra.yml or an infra/ directory (default: the embedded default infra).",
    show_default=False)


def load_or_exit(path: Path | None) -> Infra:
    """Validate PATH (None: the embedded default) and return the Infra; print warnings to
    stderr. On problems print every one of them and exit with status 2."""
    from anklume.agent.validate import ValidationError, load_with_warnings

    try:
        infra, warnings = load_with_warnings(path)
    except ValidationError as e:
        for w in e.warnings:
            typer.echo(f"warning: {w}", err=True)
        typer.echo(str(e), err=True)
        raise typer.Exit(e.exit_code) from None
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    return infra


def validate(path: Path | None = PATH_ARG) -> None:
    """Check infra.yml: exit 0 if valid, 2 (listing every problem) if not."""
    infra = load_or_exit(path)
    machines = sum(len(d.machines) for d in infra.domains)
    typer.echo(f"valid: {len(infra.domains)} domains, {machines} machines")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    # plan/apply live in their own module (the reconcile work).
    from anklume.agent import cli_reconcile, cli_runtime

    cli_reconcile.register(app)
    cli_runtime.register(app)  # agent boot/health, status
