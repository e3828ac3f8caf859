"""The agent's runtime commands: `anklume agent boot`, `anklume agent health` (what the
image's systemd units run) and `anklume status` (what the last run did)."""

from __future__ import annotations

import json
from enum import StrEnum

import typer

from anklume import exitcodes

app = typer.Typer()
agent_app = typer.Typer(help="The on-box agent's runtime (run by the appliance's units).",
                        no_args_is_help=True)
app.add_typer(agent_app, name="agent")

EXIT_NO_RESULT = exitcodes.NOTHING  # `anklume status`: no result recorded yet


class Trigger(StrEnum):
    boot = "boot"
    path = "path"
    cli = "cli"


@agent_app.command("boot", short_help="Reconcile the saved configuration (the boot unit).")
def boot_cmd(
    trigger: Trigger = typer.Option(
        Trigger.boot, "--trigger", help="What started this run (recorded in the last result)."),
    incus_timeout: float = typer.Option(
        120.0, "--incus-timeout", metavar="SECONDS", help="How long to wait for Incus."),
    retry_timeout: float = typer.Option(
        300.0, "--retry-timeout", metavar="SECONDS",
        help="How long to retry a reconcile interrupted by temporary errors."),
) -> None:
    """Reconcile the saved configuration (infra.yml or infra/ in $ANKLUME_STATE_DIR, else the
    embedded default) and record the last result. Exit status: 0 success; 1 partial (some
    resource failed) or the agent failed; 2 invalid configuration (nothing changed, not
    retried); 75 Incus never answered."""
    from anklume.agent import boot

    raise typer.Exit(boot.boot(trigger.value, incus_timeout=incus_timeout,
                               retry_timeout=retry_timeout))


@agent_app.command("health", short_help="The boot health gate: exit 0 when the OS did its job.")
def health_cmd() -> None:
    """The boot health gate: exit 0 when Incus answers, the firewall table is loaded and this
    boot's last result is success, invalid or partial; exit 1 otherwise (the rule:
    docs/health-gate.md)."""
    from anklume.agent import health

    checks = health.judge(health.collect())
    for c in checks:
        typer.echo(c.line())
    if not health.passed(checks):
        raise typer.Exit(exitcodes.FAILED)


@app.command("status")
def status_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """What the agent's last run did (time, versions, outcome, counts, errors, the unsafe
    opt-ins it applied, the configuration's warnings), then the machine: version, slot and
    update state, the other slot, boot from RAM or the stick, the data pool (health, space),
    Secure Boot, the TPM, memory encryption, GPUs, the isolation table, and what needs
    attention. Exit 0, or 3 when there is no result yet."""
    from anklume import overview
    from anklume.agent import last_result

    last, reason = last_result.read()
    this_boot = last is not None and last.boot_id == last_result.boot_id()
    machine = overview.collect()
    if as_json:
        typer.echo(json.dumps({
            "last_result": json.loads(last.to_json()) if last else None,
            "this_boot": this_boot, "reason": reason or None, **overview.as_json(machine)},
            indent=2))
        if last is None:
            raise typer.Exit(EXIT_NO_RESULT)
        return
    if last is None:
        typer.echo(f"No result: {reason}")
    else:
        c = last.counts
        typer.echo("\n".join([
            f"outcome:  {last.outcome}",
            f"time:     {last.time} ({'this boot' if this_boot else 'an earlier boot'}, "
            f"trigger {last.trigger}, {last.seconds:.1f} s)",
            f"versions: agent {last.agent_version}, image {last.image_version or 'unknown'}",
            f"config:   {last.config}",
            f"counts:   {c.changes} changes, {c.failed} failed, {c.skipped} skipped, "
            f"{c.conflicts} conflicts, {c.kept} kept",
            f"firewall: {last.firewall}",
            *(["errors:"] + [f"  - {e}" for e in last.errors] if last.errors else []),
            *(["UNSAFE (accepted in infra.yml: these machines are not fully contained):"]
              + [f"  - {u}" for u in last.unsafe] if last.unsafe else []),
            *(["warnings:"] + [f"  - {w}" for w in last.warnings] if last.warnings else []),
        ]))
    typer.echo("\n".join(overview.lines(machine)
                          + [f"WARNING: {w}" for w in overview.warnings(machine)]))
    if last is None:
        raise typer.Exit(EXIT_NO_RESULT)

