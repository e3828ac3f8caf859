"""Image commands: build."""

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build(
        build_dir: Path | None = typer.Option(
            None, "--build-dir", help="Where the outputs go (default: build/ of the repository)."
        ),
        key_dir: Path | None = typer.Option(
            None, "--key-dir",
            help="Signing keys (default $ANKLUME_KEY_DIR or /var/lib/anklume/keys; "
            "a development set is generated when none exists).",
        ),
    ) -> None:
        """Build the signed A/B appliance image with mkosi (needs root)."""
        from anklume.image import build as image_build

        a = image_build.build(build_dir=build_dir, key_dir=key_dir, echo=typer.echo)
        for line in image_build.describe(a):
            typer.echo(line)
