"""Image commands: build, flash (`publish`, which turns a build into an update, is in
updates/cli.py)."""

from pathlib import Path

import typer

from anklume.paths import DEFAULT_KEY_DIR

app = typer.Typer()


@app.command("build")
def build(
    build_dir: Path | None = typer.Option(
        None, "--build-dir", help="Where the outputs go (default: build/ of the repository)."
    ),
    key_dir: Path | None = typer.Option(
        None, "--key-dir",
        help=f"Signing keys (default $ANKLUME_KEY_DIR or {DEFAULT_KEY_DIR}; "
        "a development set is generated when none exists).",
    ),
    version: str | None = typer.Option(
        None, "--version",
        help="Build as this version instead of anklume/VERSION (e.g. a later version "
        "of the same tree to test updates with)."),
) -> None:
    """Build the signed A/B appliance image with mkosi (needs root)."""
    from anklume.image import build as image_build

    a = image_build.build(build_dir=build_dir, key_dir=key_dir, echo=typer.echo,
                          version=version)
    for line in image_build.describe(a):
        typer.echo(line)

@app.command("flash")
def flash(
    image: Path = typer.Argument(..., help="The raw disk image (build/anklume_<version>.raw)."),
    device: str | None = typer.Argument(
        None, help="The whole disk to erase (/dev/sdX), or a regular file; "
        "without it, the sticks that can take the image are listed."),
    force: bool = typer.Option(
        False, "--force", help="Also write a disk that is neither removable nor on USB "
        "(an internal disk, a loop device), or overwrite an existing regular file. "
        "Never a mounted disk or the running system's disk."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation (scripts)."),
    wait: bool = typer.Option(
        False, "--wait", help="Without DEVICE: wait for a stick to be plugged in, then "
        "write it (after the same checks and confirmation)."),
    timeout: float = typer.Option(120, "--timeout", help="Seconds --wait waits at most."),
) -> None:
    """Write the appliance image to a USB stick, then read it back and check its SHA-256.
    Exit 0 written and verified (or list shown), 1 refused or failed, 75 --wait timed out."""
    from anklume.image import flash_run

    if device is None:
        device = flash_run.list_or_wait(image, wait, timeout, typer.echo)
        if device is None:
            return
    flash_run.flash_image(image, device, force=force, yes=yes, echo=typer.echo,
                          ask=lambda q: typer.prompt(q, default="", show_default=False))
