"""`anklume update check|apply|status|rollback`, and `anklume publish` (a build made into a
signed update directory)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from anklume.updates.anchors import Anchors
    from anklume.updates.sink import Progress

_FROM = typer.Option(None, "--from", help="Update source: an https:// URL, a directory, or "
                     "'usb' (the stick labelled ANKLUME-UPD). Default: $ANKLUME_UPDATE_SOURCE, "
                     "else the stick.")
_DOWNGRADE = typer.Option(False, "--allow-downgrade",
                          help="Accept an older version (every signature is still required).")
_UPDATE_CERT = typer.Option(None, "--update-cert", hidden=True)
_DB_CERT = typer.Option(None, "--db-cert", hidden=True)


def _anchors(update_cert: Path | None, db_cert: Path | None) -> Anchors:
    from anklume.updates.anchors import Anchors

    d = Anchors()
    a = Anchors(update_cert=update_cert or d.update_cert, db_cert=db_cert or d.db_cert)
    a.check_present()
    return a


def _work_dir() -> Path:
    from anklume.paths import update_work_dir

    return update_work_dir()


def _remember_fallback(running: str) -> frozenset[str]:
    """Record a fallback seen in the boot entries (if bootctl can tell), then return the
    versions never to offer again."""
    from anklume.errors import AnklumeError
    from anklume.updates import bootctl, state, status

    st = state.load()
    try:
        es = bootctl.entries()
    except (AnklumeError, OSError):
        es = []  # no boot loader to ask (a development host): nothing new to learn
    if status.record_fallback(st, status.report(running, es, st)):
        state.save(st)
    return st.failed_versions


def _progress() -> Progress:
    state: dict[str, int] = {}  # file name -> the percentage shown last

    def cb(name: str, done: int, total: int) -> None:
        pct = done * 100 // total if total else 100
        if state.get(name) != pct:
            state[name] = pct
            typer.echo(f"\r  {name}: {pct:3d}% of {total / 1048576:.0f} MiB", nl=pct == 100,
                       err=True)
    return cb


app = typer.Typer()
up = typer.Typer(help="Signed A/B updates of the appliance OS.", no_args_is_help=True)
app.add_typer(up, name="update")


@up.command("check")
def check(
    source: str | None = _FROM, allow_downgrade: bool = _DOWNGRADE,
    download: bool = typer.Option(False, "--download", help="Also fetch and verify every "
                                  "file into staging (nothing is installed)."),
    update_cert: Path | None = _UPDATE_CERT, db_cert: Path | None = _DB_CERT,
) -> None:
    """Say what the source offers and whether this system would install it.
    Exit 0 installable, 1 refused (the reason is printed)."""
    from anklume.updates import apply as apply_mod
    from anklume.updates import sources, stage, state, status

    anchors = _anchors(update_cert, db_cert)
    running = status.running_version()
    failed = _remember_fallback(running)
    src = sources.open_source(source, usb_mount=_work_dir() / "usb")
    if download:
        v = stage.prepare(src, _work_dir() / "staging", anchors, running=running,
                          allow_downgrade=allow_downgrade, failed=failed,
                          set_aside=frozenset(state.load().set_aside), progress=_progress())
        for line in apply_mod.summary(v, running, src.describe()):
            typer.echo(line)
        return
    m = stage.check(src, anchors, running=running, allow_downgrade=allow_downgrade,
                    failed=failed, set_aside=frozenset(state.load().set_aside))
    typer.echo(f"{m.version} is available from {src.describe()} (running {running}); "
               f"manifest signature and compatibility verified")
    for f in m.files:
        typer.echo(f"  {f.role:15} {f.name} ({f.size} bytes)")
    typer.echo("`anklume update apply` verifies every file before writing anything.")

@up.command("apply")
def apply(
    source: str | None = _FROM, allow_downgrade: bool = _DOWNGRADE,
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    reboot: bool = typer.Option(False, "--reboot", help="Reboot into the new version."),
    update_cert: Path | None = _UPDATE_CERT, db_cert: Path | None = _DB_CERT,
) -> None:
    """Verify the update completely, then install it into the inactive slot."""
    from anklume.updates import apply as apply_mod
    from anklume.updates import slot, sources, status

    anchors = _anchors(update_cert, db_cert)
    running = status.running_version()
    _remember_fallback(running)
    src = sources.open_source(source, usb_mount=_work_dir() / "usb")
    apply_mod.apply(
        src, staging=_work_dir() / "staging", definitions=_work_dir() / "sysupdate.d",
        anchors=anchors, running=running, allow_downgrade=allow_downgrade, yes=yes,
        reboot=reboot, echo=typer.echo, progress=_progress(),
        confirm=lambda q: typer.confirm(q, default=False), running_slot=slot.running(),
    )
    typer.echo("installed; it boots next (3 tries, kept only if the health gate passes)"
               if not reboot else "installed; rebooting")

@up.command("status")
def status_cmd() -> None:
    """Running version, boot entries and tries left, pending update, last fallback."""
    from anklume.updates import bootctl, slot, state, status

    running = status.running_version()
    st = state.load()
    r = status.report(running, bootctl.entries(), st)
    if status.record_fallback(st, r):
        state.save(st)
    r = status.report(running, r.entries, st, slot.running())
    for line in status.lines(r):
        typer.echo(line)

@up.command("rollback")
def rollback(yes: bool = typer.Option(False, "--yes", help="Do not ask."),
             reboot: bool = typer.Option(False, "--reboot", help="Reboot into it now."),
             db_cert: Path | None = _DB_CERT) -> None:
    """Boot the other installed version from now on (its UKI and /usr slot are checked
    first). The version left stays installed: rollback again returns to it."""
    from anklume.updates import bootctl, rollback, state, status
    from anklume.updates.errors import ApplyRefused

    cert = db_cert or _anchors(None, None).db_cert
    running = status.running_version()
    _remember_fallback(running)
    st = state.load()
    p = rollback.plan(bootctl.entries(), running, st)
    typer.echo(f"checking {p.target.version} ({p.target.path.name}): Secure Boot signature, "
               "its /usr slot block by block...")
    rollback.check_target(p.target, cert)
    if not yes and not typer.confirm(
            f"boot {p.target.version} instead of {running} from now on?", default=False):
        raise ApplyRefused("not confirmed: nothing changed")
    # Recorded first: a version renamed to no tries left without this record would be
    # taken for a failed boot.
    before = dict(st.set_aside)
    st.set_aside = {running: f"rolled back to {p.target.version}"}
    state.save(st)
    try:
        nxt = rollback.execute(p, bootctl.entries)
    except BaseException:
        st.set_aside = before
        state.save(st)
        raise
    typer.echo(f"next boot: {nxt.version} ({nxt.path.name}); {running} stays installed in "
               "the other slot (`anklume update rollback` boots it again)")
    if reboot:
        from anklume.updates.runner import system

        system(["systemctl", "reboot"])

@app.command("publish")
def publish(
    build_dir: Path = typer.Option(Path("build"), "--build-dir", help="The build's outputs."),
    out: Path = typer.Option(..., "--out", help="Update tree to add the version to."),
    min_version: str | None = typer.Option(None, "--min-version",
                                           help="Oldest version that may update to it."),
    key_dir: Path | None = typer.Option(None, "--key-dir", help="Signing keys."),
) -> None:
    """Turn a build into a signed update directory (docs/updates.md)."""
    from anklume.updates import publish as publish_mod

    dest = publish_mod.publish(build_dir, out, min_version=min_version, key_dir=key_dir)
    typer.echo(f"published {dest.name} in {dest}")
