"""`anklume plan|apply --host`: the laptop's side (validate here, then ssh), and the appliance's
side, `anklume agent receive` (agent/remote.py says how they meet)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import typer

from anklume import exitcodes, paths
from anklume.agent.cli_common import load_or_exit

HOST = typer.Option(None, "--host", metavar="USER@ADDRESS",
                    help="Plan or apply on that appliance over SSH (validated here first).")
PORT = typer.Option(None, "--port", "-p", help="SSH port of --host.")
IDENTITY = typer.Option(None, "--identity", "-i", help="SSH private key (stays on this machine).")
SSH_OPTIONS = typer.Option([], "--ssh-option", "-o", help="An ssh -o option (repeatable).")


def run_on_host(path: Path | None, host: str, *, apply: bool, flags: list[str],
                port: int | None, identity: Path | None, options: list[str],
                yes: bool = False) -> None:
    """Validate `path` here (exit 2 with every problem, nothing sent), show the appliance's
    plan, then with `apply` and a confirmation (or --yes) install and apply it there. Exits
    with the appliance's own status, as a local plan or apply would."""
    from anklume.agent import remote

    if path is None:
        raise remote.RemoteError("--host needs the infra.yml (or infra/) to send",
                                 hint="anklume apply --host root@ADDRESS infra.yml")
    load_or_exit(path)  # prints every problem and exits 2: nothing leaves this machine
    data = remote.pack(path)

    def ssh(*args: str) -> int:
        argv = remote.ssh_argv(host, ["anklume", "agent", "receive", *args, *flags],
                               port=port, identity=identity, options=options)
        return subprocess.run(argv, input=data, timeout=3600).returncode

    rc = ssh()  # the plan, against what runs there
    if rc != 0:
        raise typer.Exit(rc)
    if not apply:
        return
    if not yes:
        if not sys.stdin.isatty():
            typer.echo("not applied: confirm on a terminal, or pass --yes", err=True)
            raise typer.Exit(exitcodes.NOTHING)
        if not typer.confirm(f"apply this on {host}?", default=False):
            typer.echo("not applied")
            raise typer.Exit(exitcodes.NOTHING)
    raise typer.Exit(ssh("--apply"))


def receive_cmd(
    apply: bool = typer.Option(False, "--apply", help="Install it where the agent reads it, "
                               "then apply it (else: plan only)."),
    prune: bool = typer.Option(False, "--prune"),
    force: bool = typer.Option(False, "--force"),
    recreate: bool = typer.Option(False, "--recreate"),
    default_image: str | None = typer.Option(None, "--default-image"),
) -> None:
    """The appliance's side of `plan|apply --host`: an infra.yml or infra/ as a tar on stdin."""
    from anklume.agent import cli_reconcile, remote

    data = sys.stdin.buffer.read(remote.MAX_BYTES + 1)
    run = paths.run_dir()
    run.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="received-", dir=run) as tmp:
        received = remote.unpack(data, Path(tmp))
        if not apply:
            # Every parameter given: called directly, a typer default is an Option object.
            cli_reconcile.plan_cmd(received, prune=prune, force=force,
                                   default_image=default_image, recreate=recreate, host=None,
                                   port=None, identity=None, ssh_option=[])
            return
        load_or_exit(received)  # by this appliance's own rules, before it replaces anything
        where = remote.install(received)
        typer.echo(f"installed as {where}")
    cli_reconcile.apply_cmd(where, prune=prune, force=force, dry_run=False, recreate=recreate,
                            default_image=default_image, no_wait=False, host=None, port=None,
                            identity=None, ssh_option=[], yes=False)
