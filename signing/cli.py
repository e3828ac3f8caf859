"""Key commands: keys generate."""

from pathlib import Path

import typer

# anklume.paths, not keys: keys imports cryptography, which loads only in the command.
from anklume.paths import DEFAULT_KEY_DIR

app = typer.Typer()
keys_app = typer.Typer(help="Secure Boot and verity/update signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def generate(
    dir: Path | None = typer.Option(
        None, "--dir",
        help=f"Key directory (default $ANKLUME_KEY_DIR or {DEFAULT_KEY_DIR}).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing key set."),
) -> None:
    """Create the Secure Boot db key/cert and the verity/update signing key/cert."""
    from anklume.signing import keys

    ks = keys.generate(dir, force=force)
    typer.echo(f"keys written to {ks.dir}:")
    for p in ks.paths():
        typer.echo(f"  {p.name}")
    typer.echo("private keys are mode 0600; keep a safe offline copy of this directory.")
