"""`anklume update rollback`: boot the other installed version from now on, on purpose.

Why not `bootctl set-default <id>`: for a UKI with profiles, systemd 257's bootctl names the
entries `<file>@<profile>` while systemd-boot knows them by other ids, so a default written by
bootctl can match nothing and systemd-boot boots its own first choice, the newest version (the
bug of issue #24). This uses what systemd-boot itself does when it gives up on a version: the
running version's UKI gets a boot counter with no tries left (`anklume_<v>+0.efi`), which sorts
it after every bootable entry, whatever the ids look like. A version set aside that way before
gets its plain name back when it is rolled back to. The version rolled back from stays installed
in its slot (`rollback` again returns to it) until an update overwrites that slot.

Nothing is renamed before the other version checks out: its UKI verifies against db.crt, and its
/usr slot (the partitions that its `usrhash=` names) is on a disk and passes `veritysetup verify`
block by block. Afterwards the next boot is read back from bootctl; if it is not the target, the
renames are undone.

`plan` is pure (tests feed it recorded bootctl entries); `check_target` and `execute` act.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from anklume.errors import PermanentError
from anklume.updates import versions
from anklume.updates.errors import UpdateRefused
from anklume.updates.policy import BootEntry
from anklume.updates.runner import Runner, system
from anklume.updates.state import State
from anklume.updates.verity_sig import partition_uuids

_UKI_NAME = re.compile(r"^anklume_(?P<v>[0-9][0-9.]*?)(?:\+(?P<left>\d+)(?:-(?P<done>\d+))?)?"
                       r"\.efi$")
BY_PARTUUID = Path("/dev/disk/by-partuuid")
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
ENTRY_DEFAULT_VAR = Path(f"/sys/firmware/efi/efivars/LoaderEntryDefault-{LOADER_GUID}")


class RollbackRefused(UpdateRefused):
    """Nothing to roll back to, or the other version would not boot: nothing was changed."""


@dataclass(frozen=True)
class Uki:
    """One anklume UKI on the ESP, with all its profile entries folded into one."""
    path: Path
    version: str
    tries_left: int | None  # None: no counter (blessed, or never counted)
    booted: bool
    default: bool

    @property
    def plain(self) -> Path:
        return self.path.with_name(f"anklume_{self.version}.efi")

    @property
    def set_aside(self) -> Path:
        return self.path.with_name(f"anklume_{self.version}+0.efi")


def ukis(entries: Sequence[BootEntry]) -> list[Uki]:
    """The anklume UKIs among bootctl's entries (one per file; entries that systemd-boot only
    reported, with no file, and other loaders' entries are left out)."""
    by_path: dict[str, list[BootEntry]] = {}
    for e in entries:
        if e.path and _UKI_NAME.match(Path(e.path).name):
            by_path.setdefault(e.path, []).append(e)
    out = []
    for path, es in by_path.items():
        m = _UKI_NAME.match(Path(path).name)
        assert m is not None
        out.append(Uki(path=Path(path), version=m["v"],
                       tries_left=int(m["left"]) if m["left"] is not None else None,
                       booted=any(e.is_selected for e in es),
                       default=any(e.is_default for e in es)))
    return sorted(out, key=lambda u: versions.key(u.version) if versions.valid(u.version)
                  else (-1,), reverse=True)


@dataclass(frozen=True)
class Plan:
    running: Uki
    target: Uki
    renames: tuple[tuple[Path, Path], ...]  # in this order: the target first, then ours


def plan(entries: Sequence[BootEntry], running: str, st: State) -> Plan:
    us = ukis(entries)
    ours = [u for u in us if u.version == running]
    if not ours:
        raise RollbackRefused(f"the running version {running} has no UKI on the ESP "
                              f"(found: {', '.join(u.path.name for u in us) or 'none'})")
    cur = ours[0]
    if cur.tries_left:
        raise RollbackRefused(
            f"{running} is on trial ({cur.path.name}): its health gate decides first",
            hint="once it is blessed, roll back; if it fails, the previous version comes back "
                 "by itself")
    why_not = {}
    usable = []
    for u in us:
        if u.version == running:
            continue
        if u.version in st.failed:
            why_not[u.version] = "it failed to boot here"
        elif u.tries_left == 0 and u.version not in st.set_aside:
            why_not[u.version] = "systemd-boot gave up on it (no tries left)"
        elif u.tries_left:
            why_not[u.version] = "it is installed and not tried yet: it boots next by itself"
        else:
            usable.append(u)
    if not usable:
        others = "; ".join(f"{v}: {w}" for v, w in why_not.items()) or "none is installed"
        raise RollbackRefused(f"no other version to roll back to ({others})",
                              hint="`anklume update status` lists what is installed")
    target = usable[0]  # the newest of them (there is one: the other slot)
    renames = []
    if target.tries_left == 0:
        renames.append((target.path, target.plain))
    if cur.tries_left != 0:
        renames.append((cur.path, cur.set_aside))
    return Plan(running=cur, target=target, renames=tuple(renames))


def usrhash(uki: Path) -> str:
    """The one root hash that every command line of the UKI pins."""
    from anklume import uki as ukifile

    try:
        lines = ukifile.cmdlines(uki)
    except (ukifile.NotPE, OSError) as e:
        raise RollbackRefused(f"{uki}: unreadable UKI ({e})") from None
    found = {h for c in lines.values() for h in ukifile.usrhash_values(c)
             if ukifile.is_root_hash(h)}
    if len(found) != 1:
        raise RollbackRefused(f"{uki.name}: expected one usrhash= in its command lines, "
                              f"found {len(found)}")
    return found.pop()


def check_target(target: Uki, db_cert: Path, runner: Runner = system,
                 by_partuuid: Path = BY_PARTUUID) -> None:
    """RollbackRefused unless the target would boot: signed for this machine's db, its /usr
    slot present and intact (every block against the root hash its signed UKI pins)."""
    from anklume.updates import uki as uki_mod
    from anklume.updates.errors import UkiSignatureInvalid

    try:
        uki_mod.verify_signature(target.path, db_cert, runner)
    except UkiSignatureInvalid as e:
        raise RollbackRefused(f"{target.version} would not boot: {e}") from None
    h = usrhash(target.path)
    data_uuid, hash_uuid = partition_uuids(h)
    data, hashes = by_partuuid / data_uuid, by_partuuid / hash_uuid
    missing = [f"{what} partition {p.name}" for what, p in (("data", data), ("verity", hashes))
               if not p.exists()]
    if missing:
        raise RollbackRefused(f"the /usr slot of {target.version} is gone: no "
                              f"{' and no '.join(missing)} on any disk (an update overwrote "
                              "it?); nothing changed")
    proc = runner(["veritysetup", "verify", str(data), str(hashes), h])
    if proc.returncode != 0:
        detail = f"{proc.stdout or ''}{proc.stderr or ''}".strip().splitlines()
        raise RollbackRefused(f"the /usr slot of {target.version} is damaged: `veritysetup "
                              f"verify` failed ({detail[-1] if detail else proc.returncode}); "
                              "nothing changed")


def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)
    fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def execute(p: Plan, read_back: Callable[[], list[BootEntry]], runner: Runner = system,
            entry_default_var: Path = ENTRY_DEFAULT_VAR,
            rename: Callable[[Path, Path], None] = _rename) -> Uki:
    """Rename, then read back what systemd-boot boots next; undo and raise if it is not the
    target. Returns the UKI that boots next."""
    if entry_default_var.exists():
        # A default pinned by an older rollback would override the order: drop it.
        proc = runner(["bootctl", "set-default", ""])
        if proc.returncode != 0:
            raise RollbackRefused(f"could not clear the pinned default entry: {proc.stderr}")
    done: list[tuple[Path, Path]] = []
    try:
        for src, dst in p.renames:
            rename(src, dst)
            done.append((src, dst))
        nxt = [u for u in ukis(read_back()) if u.default]
    except BaseException:
        for src, dst in reversed(done):
            rename(dst, src)
        raise
    if not nxt or nxt[0].version != p.target.version:
        for src, dst in reversed(done):
            rename(dst, src)
        said = nxt[0].version if nxt else "no anklume entry"
        raise PermanentError(f"after the change, systemd-boot would boot {said}, not "
                             f"{p.target.version}; the change was undone")
    return nxt[0]
