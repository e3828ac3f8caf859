"""Image commands: build."""

import typer


def register(app: typer.Typer) -> None:
    pass
