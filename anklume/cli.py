"""The `anklume` command line: one typer app that merges each feature's own app."""

import typer

from anklume import __version__
from anklume.errors import AnklumeError


def _version(value: bool) -> None:
    if value:
        typer.echo(f"anklume {__version__}")
        raise typer.Exit()


app = typer.Typer(
    help="anklume: isolated, encrypted compartments on one machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show commands run and full tracebacks."),
) -> None:
    from anklume import log

    log.setup(debug=debug)


def _assemble() -> None:
    # Each feature declares its commands on its own app (its cli.py); merged here, nameless, so
    # they keep their names (`anklume build`, `anklume update apply`...). The features' cli
    # modules import their heavy work inside the commands: `anklume --version` stays fast.
    from anklume.agent import cli as agent_cli
    from anklume.firstboot import cli as firstboot_cli
    from anklume.image import cli as image_cli
    from anklume.signing import cli as signing_cli
    from anklume.updates import cli as updates_cli

    for mod in (agent_cli, firstboot_cli, image_cli, signing_cli, updates_cli):
        app.add_typer(mod.app)


_assemble()


def run() -> None:
    """Entry point that turns our own errors into a clean message and exit status (with the
    traceback first under --debug, as its help promises)."""
    try:
        app()
    except AnklumeError as e:
        import logging

        if logging.getLogger("anklume").isEnabledFor(logging.DEBUG):
            import traceback

            traceback.print_exc()
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(e.exit_code) from None
