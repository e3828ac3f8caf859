"""First-boot wizard commands."""

from __future__ import annotations

import typer

firstboot = typer.Typer(help="First-boot wizard: disks, GPUs, memory encryption, data pool.",
                        no_args_is_help=True)


@firstboot.command()
def detect(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show the disks that can hold the data pool, GPUs with a model recommendation, and memory
    encryption (read-only)."""
    from anklume.firstboot.detect import describe, detect

    hw = detect()
    typer.echo(hw.to_json() if as_json else describe(hw))


def register(app: typer.Typer) -> None:
    app.add_typer(firstboot, name="firstboot")
