"""Agent commands: validate, plan, apply. (Filled in by the agent work.)"""

import typer


def register(app: typer.Typer) -> None:
    pass
