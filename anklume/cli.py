"""The `anklume` command line: one typer app that merges each feature's own app."""

from typing import Any

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
    from anklume.vm import cli as vm_cli

    for mod in (agent_cli, firstboot_cli, image_cli, signing_cli, updates_cli, vm_cli):
        app.add_typer(mod.app)


_assemble()

# `anklume --help` lists the commands by what the user is doing, in this order; each command
# shows its first sentence there (the whole text is in its own --help).
PANELS: dict[str, tuple[str, ...]] = {
    "Build and write the stick": ("build", "flash", "keys"),
    "Try it in a VM": ("vm",),
    "First boot": ("firstboot",),
    "Your infra (infra.yml)": ("validate", "plan", "apply"),
    "Updates": ("update", "publish"),
    "The machine": ("status", "agent"),
}


def _first_sentence(text: str) -> str:
    flat = " ".join(text.split("\n\n")[0].split())
    end = flat.find(". ")
    return flat if end < 0 else flat[: end + 1]


def _short_helps(cmd: Any) -> None:
    # Lists show each command's first sentence, in every group down the tree.
    if cmd.help and not cmd.short_help:
        cmd.short_help = _first_sentence(cmd.help)
    for sub in getattr(cmd, "commands", {}).values():
        _short_helps(sub)


def command() -> Any:
    """The (click) command that `anklume` runs: the app, its commands grouped into PANELS.
    Typed Any: typer ships its own copy of click, whose types it does not export."""
    cmd: Any = typer.main.get_command(app)
    ordered: dict[str, Any] = {}
    for panel, names in PANELS.items():
        for name in names:
            sub = cmd.commands[name]  # a KeyError here: a command was renamed, fix PANELS
            sub.rich_help_panel = panel  # what typer's help reads
            _short_helps(sub)
            ordered[name] = sub
    missing = set(cmd.commands) - set(ordered)
    assert not missing, f"commands in no help panel: {sorted(missing)}"
    cmd.commands = ordered
    return cmd


def run() -> None:
    """Entry point that turns our own errors into a clean message and exit status (with the
    traceback first under --debug, as its help promises)."""
    try:
        command()(prog_name="anklume")
    except AnklumeError as e:
        import logging

        if logging.getLogger("anklume").isEnabledFor(logging.DEBUG):
            import traceback

            traceback.print_exc()
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(e.exit_code) from None
