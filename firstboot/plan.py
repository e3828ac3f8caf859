"""Answers + detected disks -> the plan of the first boot, or every reason it cannot run (pure).

The plan's text is the confirmation screen: it names exactly what will be erased (stable id,
size, model, what is on it now) before anything is touched. `--dry-run` prints it and stops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from anklume import exitcodes, paths
from anklume.errors import PermanentError
from anklume.firstboot import admin, diskref, incus_state, pool_luks, pool_zfs, vault
from anklume.firstboot.answers import Answers
from anklume.firstboot.disks import MIN_POOL_BYTES, Disk
from anklume.firstboot.steps import Action, Command, Record, Step, WriteFile

GiB = 1024**3
_SIGNATURES = {"gpt": "a GPT partition table", "dos": "an MBR partition table",
               "zfs_member": "a ZFS pool", "crypto_LUKS": "a LUKS encrypted volume"}


class PlanError(PermanentError):
    exit_code = exitcodes.INVALID

    def __init__(self, problems: Sequence[str], source: str) -> None:
        self.problems = list(problems)
        super().__init__("\n".join([f"{source}: nothing was changed, because:",
                                    *(f"  - {p}" for p in self.problems)]))


@dataclass(frozen=True)
class NewIds:
    """Chosen by the caller (uuid4) so the plan stays pure and the pointer is known up front."""

    luks_uuid: str
    btrfs_uuid: str


@dataclass(frozen=True)
class Context:
    disks: tuple[Disk, ...]
    by_id: Mapping[str, str]
    boot_disk: str | None  # kernel path of the disk the system runs from
    tpm_present: bool
    ids: NewIds
    gpu_models: tuple[str, ...] = ()
    gpu_reason: str = ""
    now: str = ""


@dataclass(frozen=True)
class Plan:
    answers: Answers
    target: diskref.Target
    steps: tuple[Step, ...]

    @property
    def erases(self) -> bool:
        return any(s.key == "erase" for s in self.steps)

    def text(self) -> str:
        a, d = self.answers, self.target.disk
        verb = "Create a new" if a.action == "create" else "Import the existing"
        lines = [f"{verb} {a.backend} data pool on {self.target.path}", ""]
        for n, step in enumerate(self.steps, 1):
            lines.append(f"{n}. {step.title}")
            lines.extend(f"     {x}" for x in step.details)
        if a.action == "create" and not self.erases:
            lines.append(f"(The disk {d.path} is empty: nothing is erased.)")
        return "\n".join(lines)


def describe_contents(d: Disk) -> str:
    if d.empty:
        return "nothing (no partition table, no signature)"
    parts = [_SIGNATURES.get(s, f"a {s} filesystem") for s in d.signatures]
    if d.pool_label:
        parts.append(f"pool name {d.pool_label!r}")
    return ", ".join(parts)


def _disk_line(t: diskref.Target) -> str:
    d = t.disk
    what = " ".join(x for x in (d.model, d.serial and f"serial {d.serial}") if x) or "no model"
    return f"{t.by_id} ({d.path}, {d.size / GiB:.1f} GiB, {what})"


def problems(a: Answers, ctx: Context) -> tuple[list[str], diskref.Target | None]:
    out: list[str] = []
    try:
        target = diskref.resolve(a.disk, ctx.disks, ctx.by_id)
    except diskref.DiskRefError as e:
        return [f"disk: {e}"], None
    d = target.disk
    if d.path == ctx.boot_disk or d.image:
        out.append(f"disk: {target.by_id} is the boot disk (it holds anklume itself)")
    elif d.size < MIN_POOL_BYTES:
        out.append(f"disk: {target.by_id} is too small ({d.size / GiB:.1f} GiB; the pool "
                   f"needs at least {MIN_POOL_BYTES // GiB} GiB)")
    elif d.unusable:
        out.append(f"disk: {target.by_id} cannot hold the pool: {d.unusable}")
    if a.action == "create" and not d.empty and a.erase not in (a.disk, target.by_id,
                                                                  target.path):
        out.append(f"erase: {target.by_id} holds {describe_contents(d)}; to erase it, set "
                   f"`erase: {a.disk}` (the disk reference, typed again)")
    if a.action == "import":
        want = "zfs" if a.backend == "zfs" else "luks"
        if d.existing_pool != want or not d.pool_id:
            out.append(f"disk: no existing {a.backend} pool found on {target.by_id} "
                       f"(it holds {describe_contents(d)})")
    if a.tpm2 == "yes" and not ctx.tpm_present:
        out.append("tpm2: yes, but this machine has no TPM2 (use auto or no)")
    return out, target


def make(a: Answers, ctx: Context) -> Plan:
    found, target = problems(a, ctx)
    if found or target is None:
        raise PlanError(found, a.source)
    steps: list[Step] = []
    dev = target.path
    tpm = a.tpm2 == "yes" or (a.tpm2 == "auto" and ctx.tpm_present)
    if a.action == "create" and not target.disk.empty:
        steps.append(Step("erase", f"ERASE the disk {_disk_line(target)}",
                          (f"now on it: {describe_contents(target.disk)}",
                           "everything on this disk is destroyed"),
                          (Command(("wipefs", "--all", "--force", dev)),)))
    if a.backend == "zfs":
        steps += _zfs(a, target, tpm)
    else:
        steps += _luks(a, target, ctx.ids, tpm)
    pool = a.pool_name if a.action == "create" or a.backend != "zfs" else (
        target.disk.pool_label or a.pool_name)
    steps.append(_vault(a, pool))
    steps.append(_admin(a))
    incus = incus_state.move if a.action == "create" else incus_state.adopt
    steps.append(Step("incus", "Move Incus's state and storage pool onto the encrypted pool",
                      (f"{paths.INCUS_DIR} on the pool; storage pool "
                       f"'{incus_state.STORAGE_POOL}' on it (Incus is stopped meanwhile)",),
                      incus(a.backend, pool)))
    steps.append(_record(a, target, ctx, pool, tpm))
    return Plan(a, target, tuple(steps))


def _zfs(a: Answers, t: diskref.Target, tpm: bool) -> list[Step]:
    if a.action == "create":
        p = a.pool_name
        out = [
            Step("pool", f"Create the encrypted ZFS pool '{p}' on {t.by_id}",
                 ("aes-256-gcm, passphrase key, zstd compression, ashift=12",),
                 (pool_zfs.load_module(), pool_zfs.create(p, t.path))),
            Step("datasets", "Create the datasets",
                 tuple(f"{p}/{n}" for n in (pool_zfs.DATASET_INCUS, pool_zfs.DATASET_STORAGE,
                                            pool_zfs.DATASET_DOMAINS)),
                 (*pool_zfs.datasets(p), pool_zfs.guid(p))),
        ]
    else:
        p = t.disk.pool_label or a.pool_name
        out = [Step("pool", f"Import the ZFS pool '{p}' (GUID {t.disk.pool_id}) and unlock it",
                    (), (pool_zfs.load_module(), pool_zfs.import_by_guid(t.disk.pool_id or ""),
                         pool_zfs.load_key(p),
                         pool_zfs.check_datasets(p), pool_zfs.guid(p)))]
    if tpm:
        out.append(Step("tpm2", "Seal the passphrase to this machine's TPM2 (PCR 7)",
                        ("the passphrase still unlocks the pool: it is the recovery key",),
                        (Command(("systemd-creds", "encrypt", "--with-key=tpm2",
                                  f"--tpm2-pcrs={pool_luks.TPM2_PCRS}", "--name=anklume-pool",
                                  "-", str(paths.pool_key_cred())), stdin="passphrase"),)))
    return out


def _luks(a: Answers, t: diskref.Target, ids: NewIds, tpm: bool) -> list[Step]:
    if a.action == "create":
        luks_dev = pool_luks.by_uuid(ids.luks_uuid)
        out = [
            Step("pool", f"Encrypt {t.by_id} with LUKS2 (UUID {ids.luks_uuid})",
                 ("argon2id, 256 MiB memory cost", f"btrfs inside (UUID {ids.btrfs_uuid})"),
                 (pool_luks.format_(t.path, ids.luks_uuid),
                  Command(("udevadm", "settle")),
                  pool_luks.open_(luks_dev), pool_luks.mkfs(ids.btrfs_uuid))),
            Step("datasets", "Create the btrfs subvolumes",
                 (pool_luks.SUBVOL_INCUS, pool_luks.SUBVOL_STORAGE, pool_luks.SUBVOL_DOMAINS),
                 (*pool_luks.mount_top(), *pool_luks.subvolumes(), pool_luks.btrfs_uuid())),
        ]
    else:
        luks_dev = pool_luks.by_uuid(t.disk.pool_id or "")
        out = [Step("pool", f"Open the LUKS2 volume {t.disk.pool_id} and mount its btrfs", (),
                    (pool_luks.open_(luks_dev), *pool_luks.mount_top(),
                     pool_luks.check_subvolumes(), pool_luks.btrfs_uuid()))]
    if tpm:
        out.append(Step("tpm2", "Enroll this machine's TPM2 (PCR 7) and a recovery key",
                        ("the recovery key is shown ONCE: write it down",),
                        (pool_luks.enroll_tpm2(luks_dev),
                         pool_luks.enroll_recovery_key(luks_dev))))
    return out


def _vault(a: Answers, pool: str) -> Step:
    where = f"{pool}/{vault.DATASET}" if a.backend == "zfs" else f"subvolume {vault.DATASET}"
    return Step("vault", "Keep this machine's credentials and configuration in the pool",
                (f"{paths.vault_dir()} ({where}): root's password hash, SSH keys, infra.yml, "
                 "network files, the last firewall",
                 "the unencrypted persistent partition keeps none of them"),
                (*vault.mount(a.backend, pool), vault.adopt_plain()))


def _admin(a: Answers) -> Step:
    actions: list[Action] = []
    details = []
    if a.admin.root_password_hash:
        actions.append(Command(admin.CHPASSWD, stdin="root_hash_line"))
        # /etc is rebuilt from the factory copy at every boot: the hash is kept in the pool's
        # vault, and the image applies it (or locks root) at every boot, once it is unlocked.
        actions.append(WriteFile(str(paths.root_password_hash(paths.vault_dir())),
                                 a.admin.root_password_hash + "\n",
                                 mode=0o600, dir_mode=0o700))
        details.append(f"root password set (console and SSH), its hash kept in "
                       f"{paths.root_password_hash(paths.vault_dir())}")
    else:
        actions.append(Command(admin.LOCK_ROOT))
        details.append("root password locked: no console login without a password")
    if a.admin.ssh_authorized_keys:
        actions.append(WriteFile(str(paths.authorized_keys(paths.vault_dir())),
                                 admin.authorized_keys_text(a.admin.ssh_authorized_keys),
                                 mode=0o600, dir_mode=0o700))
        details.append(f"{len(a.admin.ssh_authorized_keys)} SSH key(s) in "
                       f"{paths.authorized_keys(paths.vault_dir())}")
    return Step("admin", "Set the administrator's credentials", tuple(details), tuple(actions))


def _record(a: Answers, t: diskref.Target, ctx: Context, pool: str, tpm: bool) -> Step:
    fields = [("backend", a.backend), ("pool_name", pool), ("disk_by_id", t.by_id),
              ("tpm2", "yes" if tpm else "no"), ("gpu_models", ",".join(ctx.gpu_models)),
              ("gpu_reason", ctx.gpu_reason), ("created_at", ctx.now), ("action", a.action)]
    if a.backend == "zfs":
        fields.append(("zpool_guid", "@zpool_guid"))
    else:
        fields.append(("luks_uuid", ctx.ids.luks_uuid if a.action == "create"
                       else t.disk.pool_id or ""))
        fields.append(("btrfs_uuid", "@btrfs_uuid"))
    return Step("record", "Record the choices on the persistent partition",
                (f"{paths.firstboot_record()}: backend, pool id, disk by-id, TPM2, GPU advice",),
                (Record(tuple(fields)),))
