"""Key commands: keys generate."""

import typer


def register(app: typer.Typer) -> None:
    pass
