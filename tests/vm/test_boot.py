"""Boot tests of the real appliance image: OVMF with Secure Boot, systemd-boot, the signed UKI.

The cheap facts share one boot (`main_boot`: multi-user, verity, Secure Boot, the CLI); the
negative tests (unsigned UKI, corrupted /usr) need a tampered disk each, so a boot each.
Each boot starts from fresh OVMF variables, like a new machine: systemd-boot enrols our keys
from the ESP and resets once; only then are signatures enforced. So no test depends on another.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from anklume.vm import disk, guest, qemu
from anklume.vm.boot import (
    DATA_DISK_BYTES,
    DATA_DISK_SERIAL,
    LIVE_PASSWORD,
    Boot,
    log_dir_for,
    ready_vars,
    record_timing,
)

pytestmark = pytest.mark.vm


# --- the shared boot ---------------------------------------------------------------------------


def test_boots_to_multi_user_without_failed_units(main_boot: Boot) -> None:
    r = main_boot.report
    logs = "".join(
        f"\n--- {unit} ---\n{base64.b64decode(b64).decode(errors='replace')}"
        for unit, b64 in r.prefixed("failed_log.").items()
    )
    assert r["failed_units"] == "", f"failed units in the guest: {r['failed_units']}{logs}"
    assert r["system_state"] == "running"
    assert r["multi_user"] == "active"
    assert r["ordering_cycles"] == "0", "systemd found an ordering cycle and dropped a job"
    # The guest's own verdict covers more than this test (Secure Boot, the CLI): only its
    # boot-health reasons belong here; the other tests assert the rest precisely.
    assert not {"system_state", "failed_units"} & set(r.reasons), r.reasons


def test_logins_and_machine_id_on_the_read_only_os(main_boot: Boot) -> None:
    """Login prompts on the serial console and tty1; a valid machine-id although the image
    ships none (made at the first boot and kept on the persistent partition)."""
    r = main_boot.report
    assert r["getty_serial"] == "active", r["getty_serial"]
    assert r["getty_tty1"] == "active", r["getty_tty1"]
    assert re.fullmatch(r"[0-9a-f]{32}", r["machine_id"]), r["machine_id"]


def test_live_mode_root_is_locked_until_the_console_chooses_a_password(main_boot: Boot) -> None:
    """Root is locked in the image. In live mode, `root` at the console's login prompt asks for
    a password for this session: an empty one is refused, the chosen one opens a root shell and
    is kept as a yescrypt hash (in /etc, a tmpfs: gone at shutdown, see the second boot)."""
    s = main_boot.serial
    at = s.find("Live mode: root has no password.")
    assert at > s.find("login:") > 0, s[-3000:]
    after = s[at:]
    assert "An empty password is refused." in after, after[:2000]
    assert "Root's password for this session is set." in after, after[:2000]
    assert re.search(r"LIVE-LOGIN-42 uid=0 hash=\$y\$", after), after[:3000]
    assert LIVE_PASSWORD not in s, "the session password was echoed"


def test_a_stopped_boot_gives_no_shell_without_roots_credential(second_boot: Boot) -> None:
    """The previous boot's session password lived in RAM: root is locked again, so sulogin
    (the shell of every emergency and rescue stop in the OS) refuses to open one."""
    r = second_boot.report
    assert r["root_shadow_live"].startswith("!"), r["root_shadow_live"]
    assert r["sulogin_locked"] == "1", r["sulogin_locked"]


def test_credentials_planted_on_the_esp_are_refused(second_boot: Boot) -> None:
    """An SSH key for root, written onto the stick's ESP as a credential with the null key
    (no TPM here: systemd itself would accept it): removed in the initrd before anything reads
    it, and said on the console."""
    r = second_boot.report
    assert r["esp_cred_listed"] == "0" and r["esp_cred_key"] == "0", \
        (r["esp_cred_listed"], r["esp_cred_key"])
    assert ("anklume: credentials from the boot partition refused (nothing authenticates "
            "them): ssh.authorized_keys.root") in second_boot.serial, second_boot.serial[-3000:]


def test_boot_menu_editor_is_off(artifacts) -> None:
    """Host side: the ESP's loader.conf, which systemd-boot reads, turns the menu's command-line
    editor off (init=/bin/sh from the keyboard on a machine without Secure Boot)."""
    conf = disk.Esp(artifacts.raw).read("/loader/loader.conf").decode().split("\n")
    assert "editor no" in conf, conf


def test_disk_hot_unplug_works_in_the_guest(main_boot: Boot) -> None:
    """The harness's device_del on a PCIe root port, acknowledged by the guest kernel: what the
    copy-to-RAM tests rely on to pull the boot disk out from under a running system."""
    assert main_boot.unplug.startswith("ok"), main_boot.unplug


def test_usr_is_verity_with_the_hash_pinned_by_the_signed_uki(main_boot: Boot, artifacts) -> None:
    r = main_boot.report
    # The build's usr hash is read from the signed UKI's .cmdline section (artifacts.find).
    assert artifacts.usr_hash, f"the UKI's command line has no usrhash=: {artifacts.cmdline!r}"
    # systemd-boot chose the build's UKI (entry id = file name, without a boot counter).
    assert r["loader_entry"].startswith(artifacts.uki.stem), r["loader_entry"]
    booted = guest.cmdline_value(r["cmdline"], "usrhash")
    assert booted == artifacts.usr_hash, "the kernel did not boot with the UKI's usrhash="

    # /usr is a read-only mount of a device-mapper device that dm-verity set up ...
    assert r["usr_dm_name"], f"/usr is not on device-mapper (source {r['usr_source']!r})"
    assert r["usr_dm_uuid"].startswith("CRYPT-VERITY-"), r["usr_dm_uuid"]
    assert re.search(r"(^|,)ro(,|$)", r["usr_options"]), r["usr_options"]
    # ... with exactly that root hash (from the kernel's table, or cryptsetup's status).
    table = r.get("usr_dm_table")
    status = r.prefixed("usr_verity.")
    assert table or status, "neither dmsetup nor veritysetup is in the image to read the table"
    if table:
        assert " verity " in f" {table} ", table
        assert artifacts.usr_hash in table.split(), f"dm table root hash differs: {table}"
    if status:
        assert status.get("root_hash") == artifacts.usr_hash, status
        assert status.get("status", "verified") in ("verified",), status


def test_persistent_partition_is_the_writable_state(main_boot: Boot) -> None:
    """/var/lib/anklume is the partition systemd-repart made at first boot (label
    anklume-persist) on the disk the system booted from, mounted read-write by the initrd; /
    itself is a tmpfs. Another disk with a partition of the same label (a second anklume stick)
    is attached and must be left alone."""
    r = main_boot.report
    assert r["root_fstype"] == "tmpfs", r["root_fstype"]
    assert r["persist_label"] == "anklume-persist", (r["persist_source"], r["persist_label"])
    assert re.search(r"(^|,)rw(,|$)", r["persist_options"]), r["persist_options"]
    assert r["esp_disk"] and r["persist_disk"] == r["esp_disk"], (r["persist_disk"], r["esp_disk"])
    assert r["impostor_seen"] == "no", "the impostor disk's partition was mounted"
    assert r["impostor_mounts"] == "1", "more than one anklume-persist partition is mounted"
    state = base64.b64decode(r["persist_state_b64"]).decode()
    assert "state=mounted" in state, state


def test_disk_pins_slot_a_to_the_usr_hash(artifacts) -> None:
    """Host side, no boot: systemd finds the usr partitions by UUIDs derived from the root hash
    (first and second half), so the image's slot A must carry exactly those."""
    usr = disk.find_partition(artifacts.raw, disk.USR)
    verity = disk.find_partition(artifacts.raw, disk.USR_VERITY)
    h = artifacts.usr_hash
    assert h
    assert usr.uuid.hex == h[:32], f"usr partition {usr.uuid} is not derived from {h}"
    assert verity.uuid.hex == h[32:], f"usr-verity partition {verity.uuid} is not from {h}"


def test_esp_carries_the_signed_uki_of_the_build(artifacts) -> None:
    """Host side, no boot: what the firmware will load is byte for byte the UKI whose command
    line (and so usrhash=) the other tests compare against, and it is signed."""
    esp = disk.Esp(artifacts.raw)
    ukis = [n for n in esp.ls("/EFI/Linux") if n.endswith(".efi")]
    assert ukis, "no UKI in the ESP's /EFI/Linux"
    built = artifacts.uki.read_bytes()
    assert disk.is_signed(built), f"{artifacts.uki} has no Authenticode signature"
    matching = [n for n in ukis if esp.read(f"/EFI/Linux/{n}") == built]
    assert matching, f"none of {ukis} in the ESP is {artifacts.uki.name}"


def test_secure_boot_is_enabled_and_enforced(main_boot: Boot) -> None:
    r = main_boot.report
    assert r["secureboot"] == "1", "SecureBoot EFI variable is not 1"
    assert r["setupmode"] == "0", "firmware still in setup mode: signatures are not enforced"
    # The kernel locks itself down when booted with Secure Boot (integrity at least).
    lockdown = re.search(r"\[(\w+)\]", r["lockdown"])
    assert lockdown and lockdown.group(1) in ("integrity", "confidentiality"), r["lockdown"]
    # Booted through systemd-boot and systemd-stub, i.e. from the signed UKI, not a bypass.
    assert "systemd-boot" in r["loader_info"], r["loader_info"]
    assert "systemd-stub" in r["stub_info"], r["stub_info"]
    # A fresh OVMF starts in setup mode: systemd-boot enrols our keys and resets once.
    assert main_boot.resets >= 1, "no enrolment reboot seen on fresh firmware variables"
    # What the user is told: `anklume status` reads the same variables, and neither it nor the
    # console's greeting warns (they do when it is off or in setup mode: the unit tests
    # test_secureboot.py and test_console_greeting.py give them those states).
    status = base64.b64decode(r["status_b64"]).decode(errors="replace")
    assert "secure boot: on" in status and "WARNING: Secure Boot" not in status, status
    assert "WARNING: Secure Boot" not in main_boot.serial


def test_status_gives_the_whole_machine(main_boot: Boot, artifacts) -> None:
    """`anklume status` on the booted appliance: after the agent's result, the version and its
    slot, the other slot (empty on a new stick), how it booted, the pool (none: live mode, and
    the warning that goes with it), the TPM (none in this VM), the isolation table, GPUs."""
    status = base64.b64decode(main_boot.report["status_b64"]).decode(errors="replace")
    lines = status.splitlines()
    assert f"version:     {artifacts.version}, slot A, blessed" in lines, status
    assert "other slot:  empty (no other version installed)" in lines, status
    assert "isolation:   the anklume table is loaded" in lines, status
    assert "gpus:        none" in lines, status
    assert any(x.startswith("memory encryption: ") for x in lines), status
    assert "boot:        from the stick" in lines, status
    assert "pool:        none: live mode (state in RAM)" in lines, status
    assert "tpm:         none" in lines, status
    assert "WARNING: live mode: no encrypted data pool yet" in status, status


def test_anklume_cli_in_the_image(main_boot: Boot, artifacts) -> None:
    r = main_boot.report
    assert r["anklume_path"], "the anklume command is not in the image's PATH"
    # The image's own version (os-release, set by the build) and the CLI's agree with the build.
    assert r["os_image_version"] == artifacts.version, r["os_image_version"]
    assert r["anklume_version"] == f"anklume {artifacts.version}", r["anklume_version"]
    assert r["anklume_help_rc"] == "0"
    help_text = base64.b64decode(r["anklume_help_b64"]).decode(errors="replace")
    # The agent's commands and the first-boot wizard's.
    for command in ("validate", "plan", "apply", "firstboot"):
        assert re.search(rf"\b{command}\b", help_text), f"`anklume --help` lacks {command}"


def test_firstboot_detect_offers_the_blank_disk_not_the_boot_disk(main_boot: Boot) -> None:
    """The wizard's detection in the booted image: the blank data disk is offered for the pool,
    the disk the appliance runs from (verity /usr, persist) is not."""
    r = main_boot.report
    out = base64.b64decode(r["firstboot_detect_b64"]).decode(errors="replace")
    assert r["firstboot_detect_rc"] == "0", out
    found = json.loads(out)["disks"]
    data = [d for d in found if d["size"] == DATA_DISK_BYTES]
    assert len(data) == 1, f"the {DATA_DISK_BYTES} byte data disk is not listed once: {found}"
    assert data[0]["candidate"] and data[0]["empty"], data[0]
    assert data[0]["serial"] == DATA_DISK_SERIAL, data[0]
    # The boot disk is the one /usr runs from; the impostor stick also carries an anklume
    # partition, but is not the running system.
    boot = [d for d in found if "/usr" in d["mounts"]]
    assert len(boot) == 1, f"expected exactly one disk to hold /usr: {found}"
    assert boot[0]["image"] and not boot[0]["candidate"], boot[0]


def test_sshd_answers_with_host_keys_of_this_machine(main_boot: Boot) -> None:
    """Host keys are not in the image (every machine would share them): they are made at the
    first boot on the persistent partition, /etc/ssh links to them, and the socket-activated
    sshd answers a key scan on loopback with them."""
    r = main_boot.report
    assert int(r["ssh_host_keys"]) >= 1, "no host key in /etc/ssh"
    assert r["ssh_key_link"].startswith("/var/lib/anklume/identity/ssh/"), r["ssh_key_link"]
    assert "ssh-ed25519" in r["ssh_keyscan"].split(","), r["ssh_keyscan"]


def test_zfs_module_loads_under_secure_boot_lockdown(main_boot: Boot) -> None:
    """The OpenZFS module is built for the image's kernel and signed with our db key: a locked
    down kernel loads it, and the userland matches it (what the wizard's pool needs)."""
    r = main_boot.report
    log = base64.b64decode(r["zfs_kernel_log"]).decode(errors="replace")
    assert "locked down" in log, f"kernel not in lockdown, the check proves nothing:\n{log}"
    assert r["zfs_modprobe_rc"] == "0", f"{r['zfs_modprobe_out']}\n{log}"
    assert r["zfs_module"], "modprobe succeeded but /sys/module/zfs/version is missing"
    assert f"zfs-kmod-{r['zfs_module']}" in r["zpool_version"], r["zpool_version"]



def test_zfs_stays_unloaded_until_a_pool_needs_it(main_boot: Boot) -> None:
    """Live mode needs no ZFS: after the agent's deploy (Incus started, the live pool made) the
    module is still not loaded, Incus's probe (`modprobe -b`) having honoured
    image/extra/usr/lib/modprobe.d. Loading it cost ~10 s of every boot; the pool tests prove
    ZFS pools still work. Incus still lists zfs among its drivers (it asks the zfs tools, which
    load the module themselves when a pool is used)."""
    r = main_boot.report
    assert r["zfs_loaded_before_probe"] == "no", r["zfs_loaded_before_probe"]
    assert "btrfs" in r["incus_drivers"].split(","), r["incus_drivers"]

# --- negative boots ----------------------------------------------------------------------------


def test_unsigned_uki_is_refused(artifacts, scratch: Path) -> None:
    """The signed UKI with its signature stripped (same kernel, initrd, command line) as the
    only boot entry: the firmware must refuse to run it, so the OS never comes up. The firmware
    starts with our keys enrolled (user mode, signatures enforced), as after the main boot's
    enrolment."""
    image = disk.raw_copy(artifacts.raw, scratch / "unsigned.raw")
    esp = disk.Esp(image)
    signed = artifacts.uki.read_bytes()
    unsigned = disk.strip_signature(signed)
    assert disk.is_signed(signed) and not disk.is_signed(unsigned)

    for name in esp.ls("/EFI/Linux"):
        esp.delete(f"/EFI/Linux/{name}")
    for name in _ls_or_empty(esp, "/loader/entries"):
        esp.delete(f"/loader/entries/{name}")
    esp.write("/EFI/Linux/anklume-unsigned.efi", unsigned)
    conf = [
        line
        for line in esp.read("/loader/loader.conf").decode().splitlines()
        if not line.startswith("default")
    ]
    conf.append("default anklume-unsigned.efi")
    esp.write("/loader/loader.conf", ("\n".join(conf) + "\n").encode())
    assert esp.ls("/EFI/Linux") == ["anklume-unsigned.efi"]

    spec = qemu.VMSpec(
        name="unsigned-uki",
        disk=image,
        disk_format="raw",
        vars_template=ready_vars(),
        log_dir=log_dir_for("unsigned-uki"),
        smbios=guest.smbios_credentials(),
    )
    os_came_up = [r"ANKLUME-TEST", r"Linux version", r"EFI stub:", r"systemd\[1\]"]

    def body(vm: qemu.VM) -> None:
        # systemd-boot names the entry and the firmware's refusal (EFI_ACCESS_DENIED for an
        # image whose hash/signature is not in db; EFI_SECURITY_VIOLATION on some firmware).
        m = vm.wait_for(
            r"Error loading \\EFI\\Linux\\anklume-unsigned\.efi: "
            r"(?i:access denied|security violation)",
            fail_patterns=os_came_up,
            timeout=240,
        )
        refused_at = vm.elapsed()
        # Enrolled variables: no enrolment ran in this boot; the firmware itself refused.
        assert "Enrolling secure boot keys" not in vm.serial.text()
        # And nothing boots afterwards: no fallback into some other kernel.
        with pytest.raises(qemu.BootTimeout):
            vm.wait_for(r"Linux version|systemd\[1\]|ANKLUME-TEST", timeout=30, log="serial")
        assert not vm.channel.text(), "the check unit ran: the unsigned UKI booted"
        record_timing(vm, f"refused after {refused_at:.1f} s ({m.group(0)!r})")

    qemu.run_vm(spec, body)


def _ls_or_empty(esp: disk.Esp, path: str) -> list[str]:
    try:
        return esp.ls(path)
    except RuntimeError:
        return []


def test_corrupted_usr_is_detected_by_verity(artifacts, scratch: Path) -> None:
    """Flip bytes that every mount reads but squashfs itself never checks: without verity this
    boots silently; with verity the read fails with a corruption message and the OS does not
    come up: the initrd stops, counts down and restarts."""
    image = disk.raw_copy(artifacts.raw, scratch / "corrupt.raw")
    offset, where = disk.usr_corruption_offset(image)
    before, after = disk.flip_bytes(image, offset)
    assert before != after
    print(f"flipped {before.hex()} -> {after.hex()} at byte {offset} ({where})")

    spec = qemu.VMSpec(
        name="corrupt-usr",
        disk=image,
        disk_format="raw",
        vars_template=ready_vars(),
        log_dir=log_dir_for("corrupt-usr"),
        smbios=guest.smbios_credentials(),
    )
    ran_silently = [r"ANKLUME-TEST"]

    def body(vm: qemu.VM) -> None:
        # The kernel's own dm-verity message: the flipped bytes are in data block 0.
        vm.wait_for(
            r"device-mapper: verity: \S+: data block 0 is corrupted",
            fail_patterns=ran_silently,
            timeout=300,
        )
        detected_at = vm.elapsed()
        # At once, with the reason (not after /usr's device job timed out: udev's probe of the
        # corrupted block fails, so /dev/mapper/usr never appears by itself).
        vm.wait_for(r"anklume: /usr failed its integrity check \(dm-verity\)",
                    fail_patterns=ran_silently, timeout=120)
        # Then the boot stops in the initrd, and does not stay stopped: a visible countdown,
        # then a restart (a hang would never let boot counting fall back; docs/boot-policy.md).
        stop = vm.wait_for(
            r"anklume: the boot stopped in the initrd", fail_patterns=ran_silently, timeout=300
        )
        stopped_at = vm.elapsed()
        vm.wait_for(r"anklume: Restarting in 30 s", fail_patterns=ran_silently, timeout=30)
        resets = vm.resets()
        vm.qmp.wait_event("RESET", timeout=120, since=len(vm.qmp.events))
        restarted_at = vm.elapsed()
        assert vm.resets() > resets
        assert restarted_at - stopped_at >= 25, "restarted without the countdown"
        assert "ANKLUME-TEST" not in vm.channel.text()
        # The initrd's emergency shell (sulogin) is no way in: root is locked there too.
        serial = vm.serial.text()
        assert "Cannot open access to console, the root account is locked." in serial, \
            serial[-3000:]
        record_timing(vm, f"corruption detected after {detected_at:.1f} s, boot stopped "
                          f"({stop.group(0)!r}) after {stopped_at:.1f} s, restarted after "
                          f"{restarted_at:.1f} s")

    qemu.run_vm(spec, body)
