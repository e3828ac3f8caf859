"""What every agent command that reads infra.yml shares: the PATH argument and the way to get
a validated Infra (every problem printed, exit 2)."""

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
