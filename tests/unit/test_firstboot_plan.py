"""First-boot wizard core: answers files (every invalid case), disk references, the plan on a
recorded workstation (NVMe boot disk, empty SATA disk, an existing ZFS pool, a LUKS volume),
argv builders, apply's stop-at-first-failure, and the choices file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anklume import paths
from anklume.errors import CommandError
from anklume.firstboot import (
    answers,
    apply,
    choices,
    console,
    diskref,
    disks,
    incus_state,
    plan,
    pool_luks,
    pool_zfs,
)
from anklume.firstboot.steps import Command, Record, WriteFile

FIX = Path(__file__).parent / "fixtures" / "firstboot"
DISKS = tuple(disks.from_lsblk(json.loads((FIX / "workstation-lsblk.json").read_text())))
BY_ID = {k: f"/dev/{v}" for k, v in json.loads((FIX / "workstation-by-id.json").read_text())
         .items()}
EMPTY = "ata-ST500DM009-2F110A_ZA4BCD12"
ZFS = "ata-Samsung_SSD_870_EVO_1TB_S6PTNX0T401234K"
LUKS = "ata-WDC_WD20EZBX-00AYRA0_WD-WX12D81ABCDE"
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
       "admin@laptop")
HASH = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"
PASS = "correct horse battery staple"
IDS = plan.NewIds("0f0e0d0c-0b0a-4909-8807-060504030201", "11111111-2222-4333-8444-555555555555")


def ctx(tpm: bool = False) -> plan.Context:
    return plan.Context(DISKS, BY_ID, "/dev/nvme0n1", tpm, IDS, ("qwen2.5-coder:7b",),
                        "NVIDIA GPU with 8 GiB VRAM", "2026-12-02T15:00:00Z")


def yml(**over: object) -> str:
    doc: dict = {"version": 1, "action": "create", "backend": "zfs", "disk": EMPTY,
                 "passphrase": PASS, "passphrase_confirm": PASS,
                 "admin": {"ssh_authorized_keys": [KEY]}}
    for k, v in over.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    return json.dumps(doc)  # JSON is YAML


def problems_of(text: str) -> list[str]:
    with pytest.raises(answers.AnswersError) as e:
        answers.parse(text, "/media/cfg/anklume-answers.yml")
    assert all(p.file == "/media/cfg/anklume-answers.yml" for p in e.value.problems)
    return [str(p) for p in e.value.problems]


# --- answers ----------------------------------------------------------------------------------


def test_a_valid_answers_file_parses_into_typed_values() -> None:
    a = answers.parse(yml(tpm2="no", pool_name="tank"), "a.yml")
    assert (a.action, a.backend, a.disk, a.tpm2, a.pool_name) == ("create", "zfs", EMPTY, "no",
                                                                  "tank")
    assert a.admin.ssh_authorized_keys == (KEY,) and a.admin.root_password_hash is None
    assert PASS not in repr(a)  # never in a log line or a traceback


def test_every_error_names_the_field_and_the_line() -> None:
    text = ("version: 1\naction: create\nbackend: zfs\ndisk: /dev/sdb\npassphrase: short\n"
            "passphrase_confirm: short\nadmin: {}\n")
    found = problems_of(text)
    assert any(p.startswith("/media/cfg/anklume-answers.yml:4: disk: '/dev/sdb' is a kernel "
                            "device name") for p in found), found
    assert any(":5: passphrase: use at least 12 characters" in p for p in found), found
    assert any(":7: admin: give root_password_hash or ssh_authorized_keys" in p
               for p in found), found


@pytest.mark.parametrize(("over", "expected"), [
    ({"disk": "/dev/sdb"}, "disk: '/dev/sdb' is a kernel device name"),
    ({"disk": "nvme0n1"}, "disk: 'nvme0n1' is a kernel device name"),
    ({"passphrase_confirm": PASS + "!"}, "passphrase_confirm: the two passphrases differ"),
    ({"passphrase": "hunter2", "passphrase_confirm": "hunter2"}, "at least 12 characters"),
    ({"passphrase_confirm": None}, "passphrase_confirm: required"),
    ({"passphrase": None, "passphrase_confirm": None}, "passphrase: required"),
    ({"admin": {}}, "admin: give root_password_hash or ssh_authorized_keys"),
    ({"admin": {"root_password_hash": "secret123"}}, "not a crypt(3) hash"),
    ({"admin": {"root_password_hash": "$1$abc$def"}}, "weak or unsupported hash"),
    ({"admin": {"ssh_authorized_keys": ["ssh-ed25519 notbase64!"]}}, "not valid base64"),
    ({"admin": {"ssh_authorized_keys": ["ssh-dss AAAA"]}}, "unknown key type"),
    ({"admin": {"ssh_authorized_keys": ["ssh-rsa " + KEY.split()[1]]}}, "the key data says"),
    ({"backend": "btrfs"}, "backend: must be one of zfs, luks-btrfs"),
    ({"action": "format"}, "action: must be one of create, import"),
    ({"tpm2": "maybe"}, "tpm2: must be one of auto, yes, no"),
    ({"version": 2}, "version: must be 1"),
    ({"erase": "/dev/sda"}, "erase: type the disk's stable reference"),
    ({"dsik": EMPTY}, "dsik: unknown key (typo?)"),
    ({"disk": None}, "disk: required"),
    ({"pool_name": "mirror"}, "pool_name: a pool name starts with a letter"),
])
def test_invalid_answers(over: dict, expected: str) -> None:
    found = problems_of(yml(**over))
    assert any(expected in p for p in found), found


def test_not_yaml_and_not_a_mapping() -> None:
    assert "invalid YAML" in problems_of("action: [create\n")[0]
    assert "expected a mapping" in problems_of("- a\n- b\n")[0]


def test_passphrase_file_is_read_next_to_the_answers(tmp_path: Path) -> None:
    (tmp_path / "pass.txt").write_text(PASS + "\n")
    (tmp_path / "a.yml").write_text(yml(passphrase=None, passphrase_confirm=None,
                                        passphrase_file="pass.txt"))
    assert answers.load(tmp_path / "a.yml").passphrase == PASS
    (tmp_path / "b.yml").write_text(yml(passphrase=None, passphrase_confirm=None,
                                        passphrase_file="missing.txt"))
    with pytest.raises(answers.AnswersError, match="passphrase_file: cannot read"):
        answers.load(tmp_path / "b.yml")


def test_answers_lookup_credential_first_then_labeled_volume(tmp_path: Path) -> None:
    creds, vol = tmp_path / "creds", tmp_path / "cfg"
    creds.mkdir()
    vol.mkdir()
    assert answers.find(str(creds), [vol]) is None
    (vol / answers.VOLUME_FILE).write_text("x")
    assert answers.find(str(creds), [tmp_path / "none", vol]) == vol / "anklume-answers.yml"
    (creds / "anklume.firstboot.answers").write_text("x")
    assert answers.find(str(creds), [vol]) == creds / "anklume.firstboot.answers"
    assert answers.find(None, []) is None


# --- disk references --------------------------------------------------------------------------


def test_disk_references_by_id_wwn_serial() -> None:
    assert diskref.resolve(EMPTY, DISKS, BY_ID).disk.path == "/dev/sda"
    assert diskref.resolve("/dev/disk/by-id/" + EMPTY, DISKS, BY_ID).by_id == EMPTY
    t = diskref.resolve("0x5000c500a1b2c3d4", DISKS, BY_ID)
    assert (t.disk.path, t.by_id) == ("/dev/sda", EMPTY)  # the readable name is kept
    assert diskref.resolve("wwn-0x5000c500a1b2c3d4", DISKS, BY_ID).disk.path == "/dev/sda"
    assert diskref.resolve("WD-WX12D81ABCDE", DISKS, BY_ID).by_id == LUKS
    with pytest.raises(diskref.DiskRefError, match="partition"):
        diskref.resolve(ZFS + "-part1", DISKS, BY_ID)
    with pytest.raises(diskref.DiskRefError, match="no disk has"):
        diskref.resolve("ata-NOPE_123", DISKS, BY_ID)
    with pytest.raises(diskref.DiskRefError, match="kernel device name"):
        diskref.resolve("/dev/sda", DISKS, BY_ID)
    with pytest.raises(diskref.DiskRefError, match="has no /dev/disk/by-id name"):
        diskref.resolve("ZA4BCD12", DISKS, {})


# --- plan -------------------------------------------------------------------------------------


def plan_problems(text: str, c: plan.Context | None = None) -> list[str]:
    with pytest.raises(plan.PlanError) as e:
        plan.make(answers.parse(text, "a.yml"), c or ctx())
    assert "nothing was changed" in str(e.value)
    return e.value.problems


def test_the_fixture_machine_is_what_the_plan_tests_assume() -> None:
    by = {d.path: d for d in DISKS}
    assert by["/dev/nvme0n1"].image and by["/dev/sda"].empty
    assert (by["/dev/sdb"].existing_pool, by["/dev/sdb"].pool_id, by["/dev/sdb"].pool_label) == (
        "zfs", "12724534129873459386", "anklume")
    assert by["/dev/sdc"].existing_pool == "luks" and by["/dev/sdc"].wwn == "0x50014ee2c1d2e3f4"


@pytest.mark.parametrize(("over", "expected"), [
    ({"disk": "nvme-KINGSTON_SNV2S250G_50026B7686B2A1F3"}, "is the boot disk"),
    ({"disk": "usb-Generic_Flash_Disk_FD0001-0:0"}, "is too small (2.0 GiB; the pool needs at "
                                                    "least 4 GiB)"),
    ({"disk": "ata-NOPE_1"}, "no disk has the by-id name"),
    ({"disk": ZFS}, f"erase: {ZFS} holds a GPT partition table, a ZFS pool, pool name "
                    "'anklume'; to erase it, set `erase: " + ZFS),
    ({"disk": ZFS, "erase": EMPTY}, "to erase it"),
    ({"action": "import"}, "no existing zfs pool found on " + EMPTY),
    ({"action": "import", "disk": LUKS}, "no existing zfs pool found"),
    ({"action": "import", "disk": ZFS, "backend": "luks-btrfs"}, "no existing luks-btrfs pool"),
    ({"tpm2": "yes"}, "tpm2: yes, but this machine has no TPM2"),
])
def test_invalid_plans(over: dict, expected: str) -> None:
    found = plan_problems(yml(**over))
    assert any(expected in p for p in found), found


def test_create_zfs_on_the_empty_disk() -> None:
    p = plan.make(answers.parse(yml(), "a.yml"), ctx())
    assert [s.key for s in p.steps] == ["pool", "datasets", "vault", "admin", "incus", "record"]
    # The credentials go into the pool's vault (mounted by the step before), never onto the
    # unencrypted persistent partition.
    vault_step, admin_step = p.steps[2], p.steps[3]
    script = vault_step.actions[0].argv[2]
    assert "zfs create -o mountpoint=legacy anklume/anklume" in script, script
    assert f"mount -t zfs anklume/anklume {paths.vault_dir()}" in script, script
    keys = [a for a in admin_step.actions if isinstance(a, WriteFile)]
    assert [k.path for k in keys] == [str(paths.vault_dir() / "identity/ssh/authorized_keys")]
    assert keys[0].mode == 0o600
    text = p.text()
    assert text.startswith(f"Create a new zfs data pool on /dev/disk/by-id/{EMPTY}")
    assert "is empty: nothing is erased" in text and "ERASE" not in text
    # The ZFS module first: nothing loads it at boot (image/extra/usr/lib/modprobe.d).
    assert p.steps[0].actions[0] == Command(("modprobe", "zfs"))
    create = p.steps[0].actions[1]
    assert isinstance(create, Command) and create.stdin == "passphrase"
    assert f"/dev/disk/by-id/{EMPTY}" in create.argv and PASS not in str(p.steps)


def test_erasing_a_disk_with_data_names_it_and_what_is_on_it() -> None:
    p = plan.make(answers.parse(yml(disk=ZFS, erase=ZFS, backend="luks-btrfs"), "a.yml"), ctx())
    assert p.erases and p.steps[0].key == "erase"
    text = p.text()
    assert (f"1. ERASE the disk {ZFS} (/dev/sdb, 931.5 GiB, Samsung SSD 870 EVO 1TB serial "
            "S6PTNX0T401234K)") in text
    assert "now on it: a GPT partition table, a ZFS pool, pool name 'anklume'" in text
    assert p.steps[0].actions == (Command(("wipefs", "--all", "--force",
                                           f"/dev/disk/by-id/{ZFS}")),)
    # the LUKS UUID chosen up front is the pointer that gets recorded
    (rec,) = p.steps[-1].actions
    assert isinstance(rec, Record) and ("luks_uuid", IDS.luks_uuid) in rec.fields


def test_erase_accepts_the_serial_the_disk_was_named_by() -> None:
    p = plan.make(answers.parse(yml(disk="WD-WX12D81ABCDE", erase="WD-WX12D81ABCDE"), "a.yml"),
                  ctx())
    assert p.erases and p.target.by_id == LUKS


def test_import_zfs_by_guid_keeps_the_pool_and_its_state() -> None:
    p = plan.make(answers.parse(yml(action="import", disk=ZFS, passphrase_confirm=None), "a"),
                  ctx())
    assert not p.erases
    modprobe, *pool = p.steps[0].actions
    assert modprobe == Command(("modprobe", "zfs"))
    assert pool[0].argv == ("zpool", "import", "-d", "/dev/disk/by-id", "-N", "-o",
                            "cachefile=none", "12724534129873459386")
    assert pool[1] == Command(("zfs", "load-key", "anklume"), stdin="passphrase")
    incus = [a.argv for a in p.steps[-2].actions]
    assert ("cp", "-a", "--", "/var/lib/incus/.", str(paths.incus_staging())) not in incus
    assert ("incus", "admin", "init", "--preseed") not in incus


def test_import_luks_opens_by_uuid() -> None:
    p = plan.make(answers.parse(yml(action="import", disk=LUKS, backend="luks-btrfs"), "a"),
                  ctx())
    assert p.steps[0].actions[0].argv == (
        "cryptsetup", "open", "--type", "luks2", "--key-file=-",
        "/dev/disk/by-uuid/0f6c3e2a-7b41-4c8e-9a5d-2e1f3b4c5d6e", "anklume-data")


def test_tpm2_auto_follows_the_machine() -> None:
    a = answers.parse(yml(backend="luks-btrfs"), "a.yml")
    assert "tpm2" not in [s.key for s in plan.make(a, ctx(tpm=False)).steps]
    step = next(s for s in plan.make(a, ctx(tpm=True)).steps if s.key == "tpm2")
    assert [c.argv[1] for c in step.actions] == ["--tpm2-device=auto", "--recovery-key"]
    # PCR 7 alone: no signed PCR 11 policy (a PCR public key found by cryptenroll by default).
    assert "--tpm2-pcrs=7" in step.actions[0].argv and "--tpm2-public-key=" in step.actions[0].argv
    assert step.actions[1].show_output and "shown ONCE" in step.details[0]


def test_the_recovery_key_is_shown_once_and_never_echoed_to_the_log(tmp_path: Path) -> None:
    p = plan.make(answers.parse(yml(backend="luks-btrfs"), "a.yml"), ctx(tpm=True))
    key = "fjbhrtkc-hvbrjugb-ngbrgljt-fvcbedtv-ktjjjfgc-rnicjkcd-bvhlcrct-kbvljbhd"

    def fake(argv: list[str], *, input: object = None, check: bool = True) -> object:
        class P:
            stdout = key + "\n" if "--recovery-key" in argv else ""
        return P()

    logged: list[str] = []
    shown: list[str] = []
    apply.apply(p, apply.secrets_of(p, "preseed"), runner=fake, root=tmp_path,
                echo=logged.append, show=shown.append)
    assert len(shown) == 1 and key in shown[0] and "shown only this once" in shown[0]
    assert not any(key in line for line in logged), logged


def test_show_once_writes_to_each_kernel_console_not_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    active = tmp_path / "active"
    active.write_text("tty0 ttyS0 ttyGONE\n")
    for name in ("tty0", "ttyS0"):
        (tmp_path / name).write_text("")
    (tmp_path / "ttyGONE").mkdir()  # cannot be opened for writing: skipped, not fatal
    assert console.show_once("secret\nline", active=active, dev=tmp_path) == 2
    assert (tmp_path / "ttyS0").read_bytes() == b"secret\r\nline\r\n"
    assert capsys.readouterr().out == ""


# --- argv builders ----------------------------------------------------------------------------


def test_zfs_create_argv() -> None:
    c = pool_zfs.create("anklume", "/dev/disk/by-id/x")
    s = " ".join(c.argv)
    for opt in ("-o ashift=12", "-o cachefile=none", "-O encryption=aes-256-gcm",
                "-O keyformat=passphrase", "-O keylocation=prompt", "-O compression=zstd"):
        assert opt in s
    assert c.argv[-2:] == ("anklume", "/dev/disk/by-id/x") and c.stdin == "passphrase"
    assert [d.argv[-1] for d in pool_zfs.datasets("p")] == ["p/incus", "p/incus-storage",
                                                            "p/domains"]


def test_luks_format_argv() -> None:
    c = pool_luks.format_("/dev/disk/by-id/x", IDS.luks_uuid)
    assert c.argv[:5] == ("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2")
    assert c.argv[c.argv.index("--pbkdf-memory"):][:2] == ("--pbkdf-memory", "262144")
    assert "--key-file=-" in c.argv and c.stdin == "passphrase"
    assert pool_luks.mkfs(IDS.btrfs_uuid).argv[-3:] == ("-U", IDS.btrfs_uuid,
                                                        "/dev/mapper/anklume-data")


def test_incus_preseed_and_order() -> None:
    import yaml
    z = yaml.safe_load(incus_state.preseed("zfs", "anklume"))
    assert z == {"storage_pools": [{"name": "default", "driver": "zfs",
                                    "config": {"source": "anklume/incus-storage"}}]}
    b = yaml.safe_load(incus_state.preseed("luks-btrfs", "anklume"))
    assert b["storage_pools"][0]["driver"] == "btrfs"
    assert b["storage_pools"][0]["config"]["source"] == "/run/anklume/pool/incus-storage"
    argv = [c.argv for c in incus_state.move("zfs", "anklume")]
    stop = argv.index(("systemctl", "stop", *incus_state.UNITS))
    final_mount = argv.index(("mount", "-t", "zfs", "anklume/incus", "/var/lib/incus"))
    first = next(i for i, a in enumerate(argv) if a[:2] == ("sh", "-c"))
    start = argv.index(("systemctl", "start", *incus_state.UNITS))
    # A bounded first try (restart when it does not finish), then a start that must succeed.
    cmds = incus_state.move("zfs", "anklume")
    assert cmds[first].check is False and cmds[start].check is True
    assert argv[first][2] == ("timeout 180 systemctl start " + " ".join(incus_state.UNITS)
                              + " || systemctl restart incus.service")
    assert stop < final_mount < first < start < argv.index(("incus", "admin", "init",
                                                             "--preseed"))


# --- apply ------------------------------------------------------------------------------------


class FakeRun:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[list[str], object]] = []
        self.fail_on = fail_on

    def __call__(self, argv: list[str], *, input: object = None, check: bool = True) -> object:
        self.calls.append((argv, input))
        if self.fail_on and self.fail_on in argv:
            raise CommandError(argv, 1, "cannot create 'anklume': no such device")

        class P:
            stdout = "987654321\n" if argv[:2] == ["zpool", "get"] else ""
        return P()


def test_apply_runs_every_step_and_records_done(tmp_path: Path) -> None:
    a = answers.parse(yml(admin={"root_password_hash": HASH, "ssh_authorized_keys": [KEY]}),
                      "a.yml")
    p = plan.make(a, ctx())
    fake = FakeRun()
    out: list[str] = []
    apply.apply(p, apply.secrets_of(p, incus_state.preseed("zfs", "anklume")), runner=fake,
                root=tmp_path, echo=out.append)
    fed = {tuple(argv[:2]): inp for argv, inp in fake.calls}
    assert fed[("zpool", "create")] == PASS and fed[("chpasswd", "-e")] == f"root:{HASH}\n"
    assert ["passwd", "--lock", "root"] not in [argv for argv, _ in fake.calls]
    # In the pool's vault (mounted by the vault step), not on the persistent partition.
    vault_dir = tmp_path / str(paths.vault_dir()).lstrip("/")
    assert not (tmp_path / "var/lib/anklume/identity").exists()
    kept = vault_dir / "identity/root-password-hash"
    assert kept.read_text() == HASH + "\n" and kept.stat().st_mode & 0o777 == 0o600
    keys = vault_dir / "identity/ssh/authorized_keys"
    assert keys.read_text() == KEY + "\n" and keys.stat().st_mode & 0o777 == 0o600
    c = choices.load(tmp_path / "var/lib/anklume/firstboot.json")
    assert c is not None and c.done and c.zpool_guid == "987654321"
    assert (c.disk_by_id, c.gpu_models, c.tpm2) == (EMPTY, ("qwen2.5-coder:7b",), False)
    assert out[0] == "[1/6] Create the encrypted ZFS pool 'anklume' on " + EMPTY


def test_apply_stops_at_the_first_failure_and_never_records_done(tmp_path: Path) -> None:
    p = plan.make(answers.parse(yml(), "a.yml"), ctx())
    fake = FakeRun(fail_on="create")
    with pytest.raises(apply.StepFailed, match=r"step 1 \(pool: Create the encrypted ZFS pool"):
        apply.apply(p, apply.secrets_of(p), runner=fake, root=tmp_path, echo=lambda s: None)
    assert [c[0][:2] for c in fake.calls] == [["modprobe", "zfs"], ["zpool", "create"]]
    assert not (tmp_path / "var/lib/anklume/firstboot.json").exists()


# --- choices ----------------------------------------------------------------------------------


def test_choices_round_trip_and_refusals(tmp_path: Path) -> None:
    c = choices.Choices("luks-btrfs", "anklume", LUKS, luks_uuid=IDS.luks_uuid,
                        btrfs_uuid=IDS.btrfs_uuid, tpm2=True, gpu_models=("a", "b"), done=True)
    path = tmp_path / "firstboot.json"
    choices.save(c, path)
    assert choices.load(path) == c and path.stat().st_mode & 0o777 == 0o600
    assert choices.load(tmp_path / "none.json") is None
    path.write_text('{"format": "anklume-firstboot", "version": 1, "backend": "zfs"')
    with pytest.raises(choices.ChoicesError, match="corrupted"):
        choices.load(path)
    path.write_text('{"format": "something-else"}')
    with pytest.raises(choices.ChoicesError, match="not an anklume first-boot file"):
        choices.load(path)
    path.write_text(choices.dumps(c).replace('"version": 1', '"version": 9'))
    with pytest.raises(choices.ChoicesError, match="version 9"):
        choices.load(path)
    path.write_text(choices.dumps(choices.Choices("zfs", "p", ZFS)))
    with pytest.raises(choices.ChoicesError, match="no stable pool id"):
        choices.load(path)


def test_ssh_key_only_locks_roots_password() -> None:
    p = plan.make(answers.parse(yml(), "a.yml"), ctx())
    step = next(s for s in p.steps if s.key == "admin")
    assert step.actions[0] == Command(("passwd", "--lock", "root"))
    assert isinstance(step.actions[1], WriteFile) and step.actions[1].content == KEY + "\n"


def test_steps_print_without_secrets() -> None:
    assert str(Command(("zfs", "load-key", "p"), stdin="passphrase")) == \
        "zfs load-key p < passphrase"
    assert "mode 600" in str(WriteFile("/x", "k", 0o600))
