"""`anklume plan|apply --host`: the user's infra, validated on their laptop, planned and applied
on the appliance over SSH.

The laptop packs infra.yml (or the infra/ directory) into a tar stream and runs the appliance's
own `anklume agent receive` through the system's ssh client, so the host key is trusted the way
ssh trusts it (known_hosts, its first-use prompt, its refusal when the key changed) and the
private key never leaves the laptop. The appliance unpacks the stream into a private directory,
plans from there, and on apply installs it where the agent reads it (`paths.user_config()`),
atomically, before applying it under the one apply lock: the boot agent and the path unit then
apply the same file.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

from anklume import atomic, paths
from anklume.errors import PermanentError

FILE, DIR = "infra.yml", "infra"
MAX_BYTES = 4 * 1024**2  # far above any real infra; a stream past it is refused, not read on


class RemoteError(PermanentError):
    pass


def pack(path: Path) -> bytes:
    """infra.yml (any file name: it travels as infra.yml) or an infra/ directory, as a tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if path.is_dir():
            tar.add(path, arcname=DIR, recursive=True,
                    filter=lambda t: t if t.isfile() or t.isdir() else None)
        else:
            tar.add(path, arcname=FILE)
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> Path:
    """The stream's infra.yml or infra/ under `dest` (returned). Only those names, only plain
    files and directories; anything else is refused before a byte is written."""
    if len(data) > MAX_BYTES:
        raise RemoteError(f"the infra sent is {len(data)} bytes, over {MAX_BYTES}")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return _extract(tar, dest)
    except tarfile.FilterError as e:
        raise RemoteError(f"the infra sent was refused: {e}") from None
    except tarfile.TarError as e:
        raise RemoteError(f"the infra sent is not a tar stream: {e}") from None


def _extract(tar: tarfile.TarFile, dest: Path) -> Path:
    members = tar.getmembers()
    tops = {m.name.split("/", 1)[0] for m in members}
    if tops not in ({FILE}, {DIR}):
        raise RemoteError(f"the stream must hold {FILE} or {DIR}/ only, not {sorted(tops)}")
    for m in members:
        if not (m.isfile() or m.isdir()) or (tops == {FILE} and not m.isfile()):
            raise RemoteError(f"{m.name}: only plain files and directories are accepted")
    tar.extractall(dest, filter="data")  # no absolute paths, no .., no links out
    return dest / tops.pop()


def install(received: Path, state: Path | None = None) -> Path:
    """Put the received infra where the agent reads it, replacing the user's previous one
    (a file and a directory never coexist: the file would win). Each step is a rename.
    On a machine with a data pool that is the pool's vault: refused while it is locked."""
    if state is None:
        if paths.has_pool() and not paths.vault_mounted():
            raise RemoteError("the data pool is not unlocked at this boot: infra.yml is kept "
                              f"on it ({paths.vault_dir()}), so it cannot be installed now; "
                              "reboot and unlock the pool first")
        state = paths.config_dir()
    state.mkdir(parents=True, exist_ok=True)
    if received.is_dir():
        staged = state / f".{DIR}.new"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(received, staged)
        old = state / f".{DIR}.old"
        shutil.rmtree(old, ignore_errors=True)
        if (state / DIR).exists():
            os.rename(state / DIR, old)
        os.rename(staged, state / DIR)
        (state / FILE).unlink(missing_ok=True)
        shutil.rmtree(old, ignore_errors=True)
        return state / DIR
    atomic.write_text(state / FILE, received.read_text(encoding="utf-8"), mode=0o644)
    shutil.rmtree(state / DIR, ignore_errors=True)
    return state / FILE


def ssh_argv(host: str, remote: Sequence[str], *, port: int | None = None,
             identity: Path | None = None, options: Sequence[str] = ()) -> list[str]:
    """The system ssh client running `remote` on `host` (user@address)."""
    argv = ["ssh"]
    if port:
        argv += ["-p", str(port)]
    if identity:
        argv += ["-i", str(identity)]
    for o in options:
        argv += ["-o", o]
    return [*argv, "--", host, shlex.join(remote)]
