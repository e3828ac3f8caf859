"""`anklume update apply`: verify and stage, show what happens, then let systemd-sysupdate
write from the verified copy. The only system-touching step is `install` (injectable)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from anklume.updates import stage, state, sysupdate
from anklume.updates.anchors import Anchors
from anklume.updates.errors import ApplyRefused
from anklume.updates.runner import Runner, interactive, system
from anklume.updates.sink import Progress
from anklume.updates.slot import Slot
from anklume.updates.sources import Source
from anklume.updates.verify import Verified


def summary(v: Verified, running: str, source: str) -> list[str]:
    m = v.manifest
    total = sum(f.size for f in m.files)
    out = [f"update {running} -> {m.version} from {source}",
           f"  verified: manifest signature, {len(m.files)} files (size, SHA-256), "
           f"root hash {v.root_hash[:16]}... signed, UKI Secure Boot signature, usrhash=",
           "  writes: the inactive /usr slot (usr, verity, signature partitions), then "
           f"EFI/Linux/{m.file('uki').name} with 3 boot tries",
           f"  payload: {total / 1024 / 1024:.0f} MiB; data pool, persistent partition and "
           "containers are not touched"]
    out += [f"    {f.role:15} {f.name} ({f.size} bytes)" for f in m.files]
    return out


def apply(
    src: Source, *, staging: Path, definitions: Path, anchors: Anchors, running: str,
    allow_downgrade: bool, yes: bool, reboot: bool, confirm: Callable[[str], bool],
    echo: Callable[[str], None], state_path: Path | None = None,
    runner: Runner = system, install_runner: Runner = interactive,
    progress: Progress | None = None, running_slot: Slot | None = None,
) -> Verified:
    if running_slot is not None and running_slot.name == "RAM":
        # /usr is a copy on loop devices: systemd-sysupdate would look for the slots there.
        raise ApplyRefused("this boot runs from RAM: an update is written to the other slot of "
                           "the boot disk, from a normal boot",
                           hint="boot the normal entry with the stick plugged in, then apply")
    st = state.load(state_path)
    v = stage.prepare(src, staging, anchors, running=running, allow_downgrade=allow_downgrade,
                      failed=st.failed_versions, set_aside=frozenset(st.set_aside),
                      runner=runner, progress=progress)
    for line in summary(v, running, src.describe()):
        echo(line)
    if not yes and not confirm(f"install {v.manifest.version}?"):
        raise ApplyRefused("not confirmed: nothing was written")
    defs = sysupdate.write_definitions(staging, definitions)
    echo(f"handing over to systemd-sysupdate ({len(defs)} transfers)")
    # Remembered before the write: if this version later fails its boots, status knows it was
    # the one installed (a failed install leaves no entry, so it is never counted as failed).
    st.last_installed = v.manifest.version
    st.set_aside = {}  # it lived in the slot that is now written
    state.save(st, state_path)
    sysupdate.install(definitions, v.manifest.version, reboot=reboot, runner=install_runner)
    return v
