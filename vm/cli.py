"""`anklume vm`: try the built appliance in a VM on this machine (vm/machine.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

app = typer.Typer()
vm = typer.Typer(help="Try the appliance in a VM on this machine: Secure Boot, TPM, its own "
                 "disks, SSH on a loopback port.", no_args_is_help=True)
app.add_typer(vm, name="vm")

_NAME = typer.Option("anklume", "--name", "-n", help="The machine (its disks and TPM persist).")


def _credentials(pairs: list[str], ssh_key: Path | None, infra: Path | None) -> dict[str, str]:
    from anklume.vm.machine import VMFailed

    creds: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise VMFailed(f"--credential {pair!r}: expected NAME=VALUE")
        creds[name] = value
    for option, path, cred in (("--ssh-key", ssh_key, "ssh.authorized_keys.root"),
                               ("--infra", infra, "anklume.infra")):
        if path is not None:
            try:
                creds[cred] = path.read_text()
            except OSError as e:
                raise VMFailed(f"{option} {path}: {e.strerror}") from None
    return creds


@vm.command("start")
def start_cmd(
    image: Path | None = typer.Argument(None, help="The raw image (default: this checkout's "
                                        "build, from scripts/build)."),
    name: str = _NAME,
    fresh: bool = typer.Option(False, "--fresh", help="Delete the machine first: new disks, "
                               "new firmware variables, new TPM."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Do not attach the console."),
    memory: int = typer.Option(4096, "--memory", help="MiB of RAM."),
    cpus: int = typer.Option(2, "--cpus"),
    ssh_port: int = typer.Option(0, "--ssh-port", help="Loopback port for the guest's SSH "
                                 "(0: the last one if free, else any free one)."),
    ssh_key: Path | None = typer.Option(None, "--ssh-key", help="A public key root may log in "
                                        "with (the ssh.authorized_keys.root credential)."),
    infra: Path | None = typer.Option(None, "--infra", help="An infra.yml for the first boot "
                                      "(the anklume.infra credential)."),
    credential: list[str] = typer.Option([], "--credential", help="NAME=VALUE, a system "
                                         "credential (repeatable)."),
    usb: bool = typer.Option(False, "--usb", help="Attach the disk as a USB stick."),
    no_tpm: bool = typer.Option(False, "--no-tpm", help="A machine without a TPM."),
    internet: bool = typer.Option(False, "--internet", help="Let the guest reach out through "
                                  "this host (default: only the SSH forward)."),
) -> None:
    """Boot the image in a VM as real hardware would. The serial console comes to this
    terminal (Ctrl-] leaves it, the machine keeps running) unless --detach."""
    from anklume.vm import machine, qemu
    from anklume.vm.machine import VMFailed

    m = machine.Machine.named(name)
    if image is None:
        from anklume.image import artifacts, build

        image = artifacts.find(build.find_repo(None) / "build").raw
    if not image.is_file():
        raise VMFailed(f"{image}: no such image", hint="build it with scripts/build")
    creds = _credentials(credential, ssh_key, infra)
    problems = qemu.host_problems(tpm=False)
    if problems:
        raise VMFailed("this host cannot boot the image:\n  " + "\n  ".join(problems))
    tpm = not no_tpm and os.access(qemu.SWTPM, os.X_OK)
    if not no_tpm and not tpm:
        typer.echo("warning: no swtpm on this host: the machine has no TPM "
                   "(install swtpm: scripts/setup-host)", err=True)
    for line in machine.prepare(m, image, fresh=fresh):
        typer.echo(f"made {line}")
    port = machine.ssh_port(m, ssh_port)
    spec = machine.spec(m, memory_mib=memory, cpus=cpus, ssh_port=port, tpm=tpm,
                        internet=internet, usb=usb, credentials=creds)
    info = machine.start(m, spec, image=image)
    if info["accel"] != "kvm":
        typer.echo("warning: no usable KVM here: emulating the CPU (TCG), boots take minutes",
                   err=True)
    typer.echo(f"machine {m.name} started ({m.dir}); SSH: ssh -p {port} root@127.0.0.1")
    typer.echo(f"  console: anklume vm console --name {m.name}    stop: anklume vm stop "
               f"--name {m.name}")
    if not detach:
        if sys.stdin.isatty():
            machine.attach(m)
            typer.echo(f"\r\nleft the console; machine {m.name} "
                       + ("keeps running" if m.pid() else "has stopped"))
        else:
            typer.echo("(no terminal here: not attaching the console)")


@vm.command("stop")
def stop_cmd(name: str = _NAME,
             force: bool = typer.Option(False, "--force", help="Pull the plug at once."),
             timeout: int = typer.Option(120, "--timeout", help="Seconds for a clean shutdown "
                                         "before the plug is pulled.")) -> None:
    """Shut the machine down (ACPI power button); its disks and TPM stay."""
    from anklume.vm import machine

    typer.echo(machine.stop(machine.Machine.named(name), timeout, force=force))


@vm.command("console")
def console_cmd(name: str = _NAME) -> None:
    """Attach this terminal to the machine's serial console (Ctrl-] to leave it)."""
    from anklume.vm import machine

    machine.attach(machine.Machine.named(name))


@vm.command("list")
def list_cmd() -> None:
    """The machines, running or not, with their SSH port."""
    from anklume.vm import machine

    ms = machine.machines()
    if not ms:
        typer.echo(f"no machines in {machine.root()}")
    for m in ms:
        pid, info = m.pid(), m.info()
        state = f"running, ssh -p {info.get('ssh_port')} root@127.0.0.1" if pid else "stopped"
        typer.echo(f"{m.name:16} {state}")
