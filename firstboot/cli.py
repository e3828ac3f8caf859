"""First-boot wizard commands."""

from __future__ import annotations

from pathlib import Path

import typer

from anklume import exitcodes

app = typer.Typer()
firstboot = typer.Typer(help="First-boot wizard: disks, GPUs, memory encryption, data pool.",
                        no_args_is_help=True)
app.add_typer(firstboot, name="firstboot")


@firstboot.command()
def detect(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show the disks that can hold the data pool, GPUs with a model recommendation, and memory
    encryption (read-only)."""
    from anklume.firstboot.detect import describe, detect

    hw = detect()
    typer.echo(hw.to_json() if as_json else describe(hw))


@firstboot.command("run")
def run_(
    answers_file: Path | None = typer.Option(None, "--answers", help="Answers file (YAML); "
                                             "no prompts. Erasing a disk still needs `erase`."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    yes: bool = typer.Option(False, "--yes", help="With --answers on a terminal: no "
                             "confirmation prompt."),
) -> None:
    """Create or import the encrypted data pool, set the administrator's credentials, move
    Incus onto the pool. Exit: 0 done, 1 a step failed, 2 invalid answers, 3 declined,
    4 no answers and no terminal."""
    from anklume.firstboot import cfgvolume, console, flow

    tty = console.interactive()
    try:
        rc = flow.firstboot_run(console.Tty(), answers_file=answers_file, dry_run=dry_run,
                                yes=yes, tty=tty, volume_mounts=cfgvolume.mount)
    finally:
        cfgvolume.unmount()
    raise typer.Exit(rc)


@firstboot.command("console")
def console_cmd(
    countdown: int = typer.Option(60, "--countdown", help="Seconds before live mode."),
) -> None:
    """Offer the setup on this boot console (run by anklume-wizard@<tty>.service while there
    is no data pool): Enter starts the wizard, `live` or the countdown starts live mode. The
    first console to answer takes it; the others wait for it. Always exits 0."""
    import os

    from anklume.errors import AnklumeError
    from anklume.firstboot import console, flow, offer

    tty = os.path.basename(os.ttyname(0)) if os.isatty(0) else "?"
    con = console.Tty()

    def wizard() -> int:
        try:
            return flow.firstboot_run(con, answers_file=None, dry_run=False, yes=False,
                                      tty=True)
        except AnklumeError as e:  # a failed step: said here, and the boot goes on
            con.say(f"error: {e}")  # str() carries the hint
            return flow.FAILED

    offer.offer(con, tty, wizard, countdown=countdown)


@firstboot.command()
def unlock() -> None:
    """Unlock the data pool (every boot): asks the passphrase through systemd-ask-password.
    Exit 0 unlocked or degraded (see /run/anklume/pool-status), 3 no pool yet."""
    from anklume.firstboot import unlock as unlock_mod

    raise typer.Exit(unlock_mod.main())


@firstboot.command()
def status() -> None:
    """The recorded choices and the pool's state at this boot."""
    from anklume import pool_status
    from anklume.firstboot import choices

    c = choices.load()
    if c is None:
        typer.echo("first boot: not done")
        raise typer.Exit(exitcodes.NOTHING)
    pool_id = c.zpool_guid or f"LUKS {c.luks_uuid}, btrfs {c.btrfs_uuid}"
    typer.echo(f"first boot: {'done' if c.done else 'not done'} ({c.action}, {c.created_at})\n"
               f"pool: {c.backend} {c.pool_name} ({pool_id}) on {c.disk_by_id}\n"
               f"tpm2: {'enrolled' if c.tpm2 else 'no'}\n"
               f"local models: {', '.join(c.gpu_models) or 'none'} ({c.gpu_reason})")
    st = pool_status.read()
    typer.echo(st.to_text().rstrip() if st else "pool state: unknown "
               "(unlock has not run at this boot)")

