"""Agent commands, assembled: `validate` here, `plan`/`apply` (cli_reconcile), `agent boot`,
`agent health` and `status` (cli_runtime). The top-level CLI merges this app into its own."""

from __future__ import annotations

from pathlib import Path

import typer

from anklume.agent import cli_reconcile, cli_remote, cli_runtime
from anklume.agent.cli_common import PATH_ARG, load_or_exit

app = typer.Typer()


@app.command("validate")
def validate(path: Path | None = PATH_ARG) -> None:
    """Check infra.yml: exit 0 if valid, 2 (listing every problem) if not."""
    infra = load_or_exit(path)
    machines = sum(len(d.machines) for d in infra.domains)
    typer.echo(f"valid: {len(infra.domains)} domains, {machines} machines")


app.add_typer(cli_reconcile.app)
app.add_typer(cli_runtime.app)
cli_runtime.agent_app.command("receive")(cli_remote.receive_cmd)
