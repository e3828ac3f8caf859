"""The first-boot wizard on the booted appliance (issue #8), answered by a person on the console
or unattended from an answers file.

Each backend is one machine booted several times from the same disks:
1. First boot, with a TPM 2.0 (swtpm), an encrypted pool made on the blank data disk with the
   TPM enrolled, Incus's state moved onto it, the agent deploying a small infra.yml (a
   credential) onto the pool, and a file written inside a container. ZFS: no answers, so the
   setup is offered on the consoles and a person answers it on the serial console. LUKS2 +
   btrfs: the answers come as a systemd credential, as a hypervisor would hand them in.
2. Second boot, without the TPM: the pool is found by its stable id, the passphrase is typed on
   the serial console (for ZFS a wrong one first), and the container and its file are back
   while the agent applies no change. Root's console login keeps the password set at setup.
3. ZFS: the pool imported from a freshly flashed stick. LUKS: three wrong passphrases then
   "continue" (degraded, healthy), and a boot with the TPM back that unlocks without asking.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from anklume.vm import disk, guest, qemu
from anklume.vm.boot import (
    DATA_DISK_BYTES,
    DATA_DISK_SERIAL,
    Boot,
    boot_and_check,
    dialogue,
)
from anklume.vm.pool import (
    PASSPHRASE,
    PROMPT,
    ROOT_PASSWORD,
    answers,
    password_hash,
    type_passphrases,
)

pytestmark = pytest.mark.vm

# One domain, one container: what the test needs of the agent, at a fraction of the default
# infra's deploy time under emulation.
INFRA = """\
schema_version: 1
project_name: anklume
global:
  addressing:
    base_octet: 10
    zone_base: 100
  default_os_image: images:debian/13
domains:
  work:
    description: Work
    trust_level: trusted
    machines:
      work-dev:
        description: Development
"""

# After the boot settled: the wizard's and unlock's units, the pool, Incus on it, the agent.
POOL_FACTS = r"""
state=$(timeout 1500 systemctl is-system-running --wait 2>/dev/null)
say "system_state=$state"
say "failed_units=$(systemctl list-units --state=failed --plain --no-legend --no-pager \
    | awk '{print $1}' | paste -sd, -)"
for u in anklume-firstboot.service anklume-unlock.service anklume-admin.service \
        anklume-agent.service anklume-health.service boot-complete.target; do
    say "unit.$u=$(systemctl is-active "$u")"
done
ulog() { journalctl -b -u "$1" -o cat --no-pager 2>&1 | tail -n "$2"; }
say "firstboot_log_b64=$(ulog anklume-firstboot.service 60 | base64 -w0)"
say "unlock_log_b64=$(ulog anklume-unlock.service 30 | base64 -w0)"
say "agent_log_b64=$(ulog anklume-agent.service 30 | base64 -w0)"
say "incus_log_b64=$( (ulog incus.service 30; tail -n 30 /var/log/incus/incusd.log) 2>&1 \
    | base64 -w0)"
say "pool_status_b64=$(base64 -w0 /run/anklume/pool-status 2>/dev/null)"
say "record_b64=$(base64 -w0 /var/lib/anklume/firstboot.json 2>/dev/null)"
say "last_result_b64=$(base64 -w0 /var/lib/anklume/last-result.json 2>/dev/null)"
say "incus_mount=$(findmnt -no SOURCE,FSTYPE /var/lib/incus | tail -n 1)"
say "zfs_props=$(zfs get -H -o property,value encryption,keystatus,keyformat anklume 2>&1 \
    | tr '\t\n' '= ')"
say "luks=$(cryptsetup status anklume-data 2>&1 | grep -E '^ *(type|cipher):' | tr -s ' \n' ' ')"
say "storage_driver=$(incus storage show default 2>&1 | sed -n 's/^driver: //p')"
say "storage_source=$(incus storage show default 2>&1 | sed -n 's/^ *source: //p')"
say "instances=$(incus list --all-projects -c ns --format csv 2>&1 | paste -sd ';' -)"
say "root_shadow=$(getent shadow root | cut -d: -f2)"
say "hostid=$(hostid)"
say "tpm=$(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null)"
at() { systemctl show -P ActiveEnterTimestampMonotonic "$1"; }
say "status_b64=$(anklume status 2>&1 | base64 -w0)"
say "ssh_socket=$(systemctl is-active ssh.socket) $(at ssh.socket)"
say "unlock_done_at=$(at anklume-unlock.service)"
"""

# What TPM2 enrolment left: the LUKS tokens, the sealed ZFS passphrase (as a hash), and whether
# a recovery key (modhex, 8 groups of 8) reached the journal.
TPM_FACTS = r"""
dev=$(cryptsetup status anklume-data 2>/dev/null | sed -n 's/^ *device: *//p')
say "luks_tokens=$([ -n "$dev" ] && cryptsetup luksDump "$dev" \
    | grep -oE 'systemd-(tpm2|recovery)' | paste -sd, -)"
say "luks_tpm2_pcrs=$([ -n "$dev" ] && cryptsetup luksDump "$dev" \
    | sed -n 's/^[[:space:]]*tpm2-hash-pcrs:[[:space:]]*//p' | head -n 1)"
say "zfs_cred_sha=$(systemd-creds decrypt --name=anklume-pool /var/lib/anklume/pool-key.cred - \
    2>/dev/null | sha256sum | cut -d' ' -f1)"
say "journal_recovery_keys=$(journalctl -b -o cat --no-pager \
    | grep -cE '([cbdefghijklnrtuv]{8}-){7}[cbdefghijklnrtuv]{8}')"
"""
RECOVERY_KEY = re.compile(r"(?:[cbdefghijklnrtuv]{8}-){7}[cbdefghijklnrtuv]{8}")
# The product's ZFS host id (image/postinst): the same in every build and on every stick.
ZFS_HOSTID = "616e6b6c"

WRITE_MARKER = r"""
m="anklume-marker-$(cat /proc/sys/kernel/random/uuid)"
incus exec --project work work-dev -- sh -c "echo $m >/root/marker && sync" 2>&1
say "marker_write_rc=$?"
say "marker_written=$m"
"""

READ_MARKER = r"""
say "marker_read=$(incus exec --project work work-dev -- cat /root/marker 2>&1)"
"""


# The vault (firstboot/vault.py) at the setup boot: mounted from the pool, and a network file
# put there as the user would (a dummy interface: harmless, and visible at the next boot).
VAULT_WRITE = r"""
say "vault_mount=$(findmnt -no SOURCE,FSTYPE /run/anklume/vault)"
say "vault_files=$(cd /run/anklume/vault && find . -type f | sort | paste -sd, -)"
say "plain_config=$(cd /var/lib/anklume && ls -d infra.yml infra firewall.nft network \
    identity/root-password-hash identity/ssh/authorized_keys 2>/dev/null | paste -sd, -)"
mkdir -p /run/anklume/vault/network
printf '[NetDev]\nName=anklume-vt0\nKind=dummy\n' >/run/anklume/vault/network/50-test.netdev
sync
"""

# Every later boot: what came from the vault, and what did not come from the plain partition.
# The key tried is the one an evil maid planted there (or none was: the same refusal).
VAULT_READ = r"""
say "vault_mount=$(findmnt -no SOURCE,FSTYPE /run/anklume/vault)"
say "vault_link=$(ip -br link show anklume-vt0 2>/dev/null | cut -d' ' -f1)"
say "etc_network=$(ls /etc/systemd/network 2>/dev/null | paste -sd, -)"
say "nft_tables=$(nft list tables 2>&1 | paste -sd, -)"
try_key() {  # try_key NAME PRIVATE-KEY: root's SSH login with that key, as sshd decides
    umask 077; printf '%s\n' "$2" >"/run/$1-key"
    out=$(timeout 60 ssh -i "/run/$1-key" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 root@127.0.0.1 echo "$1-IN" 2>&1)
    say "$1_ssh_rc=$?"
    say "$1_ssh_b64=$(printf '%s' "$out" | base64 -w0)"
}
try_key evil '@EVILKEY@'
try_key admin '@ADMINKEY@'
"""


def _b64(r: guest.Report, key: str) -> str:
    return base64.b64decode(r.get(key, "")).decode(errors="replace")


def _logs(boot: Boot) -> str:
    r = boot.report
    return "".join(f"\n--- {k} ---\n{_b64(r, k + '_log_b64')}"
                   for k in ("firstboot", "unlock", "agent", "incus"))


def _result(boot: Boot) -> dict:
    text = _b64(boot.report, "last_result_b64")
    assert text, f"no last result{_logs(boot)}"
    return json.loads(text)


# --- the setup offered on the console (no answers) ---------------------------------------------

TYPED_PASSPHRASE = "Vivid otter climbs 7 quiet hills"

# Root's password checked against the shadow entry by libxcrypt, as login does: the wizard
# hashes with yescrypt and a random salt.
ROOT_LOGIN = r"""
h=$(getent shadow root | cut -d: -f2)
say "root_hash_kind=$(printf '%s' "$h" | cut -c1-3)"
ok=$(printf '%s' '@PW@' | python3 -c 'import ctypes, sys
lib = ctypes.CDLL("libcrypt.so.1"); lib.crypt.restype = ctypes.c_char_p
h = sys.argv[1].encode()
print("yes" if lib.crypt(sys.stdin.read().encode(), h) == h else "no")' "$h")
say "root_password_ok=$ok"
say "wizard_units=$(systemctl show -P ActiveState anklume-wizard@ttyS0.service \
    anklume-wizard@tty1.service | grep . | paste -sd, -)"
say "offer_outcome=$(cat /run/anklume/wizard-finished 2>/dev/null)"
say "offer_claim=$(cat /run/anklume/wizard-console 2>/dev/null)"
""".replace("@PW@", ROOT_PASSWORD)


def setup_on_console(secret: str) -> Callable[[qemu.VM], None]:
    """A person taking the setup offered on the serial console: ZFS on the blank data disk,
    `secret` as its passphrase, the TPM enrolled, a root password for the console login."""
    return dialogue(
        ("Press Enter to set it up now", "\n"),
        ("Disk: ", "1\n"),  # the data disk is the only one that can hold the pool
        ("Backend: [1]", "\n"),  # ZFS
        ("Passphrase for the data pool:", secret + "\n"),
        ("The same passphrase again:", secret + "\n"),
        ("Unlock automatically with this machine's TPM2?", "\n"),  # yes, the default
        ("SSH public key for root", "\n"),
        ("Set a root password (console login)?", "\n"),
        ("Root password:", ROOT_PASSWORD + "\n"),
        ("Root password again:", ROOT_PASSWORD + "\n"),
        ("Go ahead? [y/N]", "y\n"),
    )


def vault_read(evil_key: str, admin_key: Path) -> str:
    return (VAULT_READ.replace("@EVILKEY@", evil_key)
            .replace("@ADMINKEY@", admin_key.read_text().strip()))


def evil_maid(work: Path) -> tuple[dict[str, str], str]:
    """What someone holding the powered-off stick writes onto its persistent partition: their
    SSH key and root password hash, an accept-all firewall with a DNAT into a domain, a
    network file, another infra.yml. Returns the files and the planted key's private half."""
    key = work / "evil_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "evil-maid", "-f",
                    str(key)], check=True, timeout=60)
    files = {
        "identity/ssh/authorized_keys": (work / "evil_ed25519.pub").read_text(),
        "identity/root-password-hash": password_hash("evil-maid") + "\n",
        "firewall.nft": ("table ip evilmaid {\n chain pre {\n  type nat hook prerouting "
                         "priority dstnat; policy accept;\n  tcp dport 2222 dnat to "
                         "10.100.0.2:22\n }\n}\n"),
        "network/10-evil.network": "[Match]\nName=*\n[Network]\nAddress=192.0.2.66/24\n",
        "infra.yml": INFRA.replace("work-dev:", "evil-box:"),
    }
    return files, key.read_text().strip()


def _boots(backend: str, artifacts, work: Path, wrong_first: bool, reflash: bool = False,
           degraded: bool = False, tpm_back: bool = False, on_console: bool = False,
           plant: bool = False) -> tuple[Boot, ...]:
    """The first boot has a TPM 2.0 and the setup enrols it; the next ones run without it (the
    pool moved to a machine without that TPM: the passphrase is asked). `on_console`: the
    setup is answered by a person on the serial console, else by an answers credential.
    `tpm_back`: a last boot with the same TPM again, which unlocks the pool without asking.
    `plant`: between the setup and the unlock boot, an evil maid writes onto the stick's
    persistent partition (evil_maid)."""
    image = disk.overlay(artifacts.raw, work / f"{backend}.qcow2")
    data = work / f"{backend}-data.qcow2"
    # The administrator's SSH key, given in the answers (the console setup here gives none).
    admin_key = work / "admin_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin", "-f",
                    str(admin_key)], check=True, timeout=60)
    tpm = work / "tpm"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), str(DATA_DISK_BYTES)],
                   check=True, timeout=60)
    secret = TYPED_PASSPHRASE if on_console else PASSPHRASE
    creds = {"anklume.firstboot.answers": answers(
                 backend, password_hash(ROOT_PASSWORD), tpm2="yes", passphrase=secret,
                 ssh_keys=[(work / "admin_ed25519.pub").read_text()]),
             "anklume.infra": INFRA}
    if on_console:
        first = boot_and_check(f"pool-{backend}-create", image, data_disk=data, wizard=True,
                               credentials={"anklume.infra": INFRA}, tpm_state=tpm,
                               console=setup_on_console(secret),
                               script=guest.check_script(POOL_FACTS + TPM_FACTS + ROOT_LOGIN
                                                         + WRITE_MARKER + VAULT_WRITE,
                                                         core=False))
    else:
        first = boot_and_check(f"pool-{backend}-create", image, data_disk=data,
                               credentials=creds, tpm_state=tpm,
                               script=guest.check_script(POOL_FACTS + TPM_FACTS + WRITE_MARKER
                                                         + VAULT_WRITE, core=False))
    typed = ("not the passphrase at all", secret) if wrong_first else (secret,)
    evil_key = "none planted"
    if plant:
        files, evil_key = evil_maid(work)
        image = disk.flatten(image, work / f"{backend}.raw")  # debugfs edits raw disks
        disk.plant(image, "anklume-persist", files)
    # The answers (again): once the wizard is done they must change nothing.
    second = boot_and_check(f"pool-{backend}-unlock", image, vars_template=first.vars_after,
                            data_disk=data, credentials=creds, console=type_passphrases(*typed),
                            script=guest.check_script(POOL_FACTS + READ_MARKER
                                                      + vault_read(evil_key, admin_key),
                                                      core=False))
    boots = [first, second]
    # The machine's last boot is quit once it reported: the create and unlock boots proved
    # that a machine with this pool shuts down.
    last = "reflashed" if reflash else "tpm" if tpm_back else "degraded" if degraded else ""
    assert last, "the unlock boot is not the last: its shutdown is proved by nothing else"
    if degraded:
        # Three wrong passphrases, then Enter at the offer: the boot goes on without the pool.
        boots.append(boot_and_check(
            f"pool-{backend}-degraded", image, vars_template=first.vars_after, data_disk=data,
            credentials=creds,
            console=type_passphrases("wrong one", "wrong two", "wrong three", ""),
            script=guest.check_script(POOL_FACTS + READ_MARKER, core=False),
            power_off=last != "degraded"))
    if tpm_back:
        boots.append(boot_and_check(
            f"pool-{backend}-tpm", image, vars_template=first.vars_after, data_disk=data,
            credentials=creds, tpm_state=tpm,
            script=guest.check_script(POOL_FACTS + READ_MARKER
                                      + vault_read(evil_key, admin_key), core=False),
            power_off=last != "tpm"))
    if reflash:
        # "My stick died, I flashed a new one": a fresh image on a new disk, the same data
        # disk, answers that import the pool. Everything must come back without a change by
        # the agent.
        fresh = disk.overlay(artifacts.raw, work / f"{backend}-reflashed.qcow2")
        creds = {**creds, "anklume.firstboot.answers": answers(
            backend, password_hash(ROOT_PASSWORD), action="import", passphrase=secret)}
        # Incus's first start on the adopted state may hang until the wizard restarts it
        # (firstboot/incus_state.py): a longer wait for the login prompt than the other boots.
        boots.append(boot_and_check(
            f"pool-{backend}-reflashed", fresh, vars_template=first.vars_after, data_disk=data,
            credentials=creds, timeout=1800,
            script=guest.check_script(POOL_FACTS + READ_MARKER, core=False),
            power_off=last != "reflashed"))
    return tuple(boots)


@pytest.fixture(scope="module")
def zfs_boots(artifacts, tmp_path_factory: pytest.TempPathFactory) -> tuple[Boot, Boot]:
    return _boots("zfs", artifacts, tmp_path_factory.mktemp("pool-zfs"), wrong_first=True,
                  reflash=True, on_console=True, plant=True)


@pytest.fixture(scope="module")
def luks_boots(artifacts, tmp_path_factory: pytest.TempPathFactory) -> tuple[Boot, Boot]:
    return _boots("luks-btrfs", artifacts, tmp_path_factory.mktemp("pool-luks"),
                  wrong_first=False, degraded=True, tpm_back=True)


def _check_created(boot: Boot, backend: str, unattended: bool) -> None:
    r = boot.report
    # The unattended unit runs on answers; without them it skips and the console offer runs.
    assert r["unit.anklume-firstboot.service"] == ("active" if unattended else "inactive"), \
        _logs(boot)
    assert r["system_state"] == "running", f"{r['failed_units']}{_logs(boot)}"
    record = json.loads(_b64(r, "record_b64") or "{}")
    assert record.get("done") is True and record.get("backend") == backend, record
    assert record.get("disk_by_id", "").endswith(DATA_DISK_SERIAL), record
    assert "state=unlocked" in _b64(r, "pool_status_b64"), _b64(r, "pool_status_b64")
    res = _result(boot)
    assert res["outcome"] == "success" and res["counts"]["failed"] == 0, (res, _logs(boot))
    assert "work-dev,RUNNING" in r["instances"], r["instances"]
    assert r["marker_write_rc"] == "0", r["marker_write_rc"]
    # The vault: mounted from the pool, holding the configuration (the infra.yml provisioned
    # from the credential moved in, the agent's firewall saved there); the unencrypted
    # persistent partition holds none of it.
    fstype = "zfs" if backend == "zfs" else "btrfs"
    assert r["vault_mount"].endswith(f" {fstype}"), r["vault_mount"]
    vault_files = r["vault_files"].split(",")
    for f in ("./infra.yml", "./firewall.nft", "./identity/root-password-hash"):
        assert f in vault_files, vault_files
    assert r["plain_config"] == "", r["plain_config"]
    # Root's console login now needs the password set at setup (locked before).
    if unattended:
        assert r["root_shadow"] == password_hash(ROOT_PASSWORD), r["root_shadow"]
    else:
        assert r["root_password_ok"] == "yes" and r["root_hash_kind"] == "$y$", r["root_hash_kind"]


def _check_unlocked(first: Boot, second: Boot) -> None:
    r = second.report
    assert r["unit.anklume-firstboot.service"] == "inactive", "the wizard ran again"
    assert r["unit.anklume-unlock.service"] == "active", _logs(second)
    assert "state=unlocked" in _b64(r, "pool_status_b64"), _b64(r, "pool_status_b64")
    assert r["system_state"] == "running", f"{r['failed_units']}{_logs(second)}"
    assert r["marker_read"] == first.report["marker_written"], (r["marker_read"], _logs(second))
    # `anklume status` shows the pool it runs on.
    status = _b64(r, "status_b64")
    assert re.search(r"^pool: +\S+ pool anklume on \S+, unlocked, (ONLINE|mounted), "
                     r"[\d.]+ GiB free of [\d.]+ GiB$", status, re.M), status
    # No remote way in while the passphrase is read: sshd's socket listens only once the unlock
    # is done (anklume-ssh.service), not with the other sockets early in the boot.
    state, ssh_at = r["ssh_socket"].split()
    assert state == "active" and int(ssh_at) >= int(r["unlock_done_at"]) > 0, \
        (r["ssh_socket"], r["unlock_done_at"])
    # The vault again, and what the unlock installed from it: the user's network file.
    assert r["vault_mount"], _logs(second)
    assert r["vault_link"] == "anklume-vt0", (r["etc_network"], _logs(second))
    assert "50-test.netdev" in r["etc_network"].split(","), r["etc_network"]
    # Root's password is the wizard's, from the vault, applied only once the pool is open.
    assert r["unit.anklume-admin.service"] == "active", _logs(second)
    # A key nobody enrolled does not log in (an evil maid's, on the ZFS machine).
    assert r["evil_ssh_rc"] != "0" and "EVIL-IN" not in _b64(r, "evil_ssh_b64"), \
        _b64(r, "evil_ssh_b64")
    res = _result(second)
    assert res["trigger"] == "boot" and res["outcome"] == "success", res
    assert res["config"] == "/run/anklume/vault/infra.yml", res
    assert res["counts"]["changes"] == 0, (res, _logs(second))
    assert r["unit.boot-complete.target"] == "active", _logs(second)
    assert r["root_shadow"] == first.report["root_shadow"], r["root_shadow"]
    # The console: the prompt, and a login prompt only after the pool was unlocked.
    serial = second.serial
    assert "Data pool unlocked." in serial, serial[-3000:]
    assert serial.index("Data pool unlocked.") < serial.rindex("login:"), serial[-3000:]
    # The greeting above the login prompt says where the compartments live now.
    assert "Data pool: " in serial and "unlocked. The compartments" in serial, serial[-3000:]
    assert "Live mode" not in serial, serial[-3000:]


def test_zfs_pool_set_up_on_the_console_holds_incus(zfs_boots: tuple[Boot, ...]) -> None:
    """A fresh machine without answers: the setup is offered on tty1 and the serial console; a
    person answers on the serial console (ZFS, the TPM enrolled), and the agent waits for the
    choice, then deploys onto the pool, never into RAM first."""
    first = zfs_boots[0]
    _check_created(first, "zfs", unattended=False)
    r = first.report
    serial = first.serial
    assert r["offer_claim"] == "ttyS0" and r["offer_outcome"] == "done", (
        r["offer_claim"], r["offer_outcome"], serial[-3000:])
    assert r["wizard_units"] == "active,active", r["wizard_units"]
    # Typed secrets are never shown.
    assert TYPED_PASSPHRASE not in serial and ROOT_PASSWORD not in serial, "a secret was echoed"
    assert "Data pool: zfs pool anklume" in serial[serial.index("The data pool is ready"):], \
        serial[-3000:]
    props = dict(p.split("=", 1) for p in r["zfs_props"].split() if "=" in p)
    assert props == {"encryption": "aes-256-gcm", "keystatus": "available",
                     "keyformat": "passphrase"}, r["zfs_props"]
    assert r["incus_mount"] == "anklume/incus zfs", r["incus_mount"]
    assert r["storage_driver"] == "zfs", r["storage_driver"]
    assert r["storage_source"] == "anklume/incus-storage", r["storage_source"]
    # Not a random host id of this build: an update or a new stick imports the pool as its own.
    assert r["hostid"] == ZFS_HOSTID, r["hostid"]
    # TPM2: the passphrase sealed to this machine's TPM decrypts to the passphrase itself.
    assert r["tpm"] == "2", r["tpm"]
    assert r["zfs_cred_sha"] == hashlib.sha256(TYPED_PASSPHRASE.encode()).hexdigest(), \
        _logs(first)
    # Before the wizard's record, the console showed its progress, not a login prompt.
    assert "The data pool is ready" in serial, serial[-3000:]
    assert serial.index("The data pool is ready") < serial.rindex("login:"), serial[-3000:]


def test_zfs_pool_unlocks_after_a_wrong_passphrase_and_everything_is_back(
    zfs_boots: tuple[Boot, ...],
) -> None:
    first, second = zfs_boots[:2]
    _check_unlocked(first, second)
    assert "wrong passphrase (try 2 of 3)" in second.serial, _logs(second)
    unlock_log = _b64(second.report, "unlock_log_b64")
    assert TYPED_PASSPHRASE not in unlock_log and TYPED_PASSPHRASE not in second.serial, \
        "passphrase echoed"
    # Not even its length: the prompt shows no masking characters.
    prompts = [line for line in second.serial.splitlines() if PROMPT in line]
    assert prompts and not any("\u2022" in p or "*" in p.split(PROMPT, 1)[1] for p in prompts), \
        prompts


def test_an_evil_maids_changes_to_the_stick_take_no_effect(zfs_boots: tuple[Boot, ...]) -> None:
    """Between two boots, someone with the powered-off stick wrote their SSH key, a root
    password hash, an accept-all firewall with a DNAT, a network file and another infra.yml
    onto its (unencrypted) persistent partition. After the real passphrase: none of it took
    effect, and the console said what was ignored."""
    first, second = zfs_boots[0], zfs_boots[1]
    r = second.report
    ssh_said = _b64(r, "evil_ssh_b64")
    assert r["evil_ssh_rc"] != "0" and "Permission denied" in ssh_said, ssh_said
    assert r["root_shadow"] == first.report["root_shadow"], r["root_shadow"]
    assert r["root_shadow"] != password_hash("evil-maid")
    assert "evilmaid" not in r["nft_tables"] and "inet anklume" in r["nft_tables"], \
        r["nft_tables"]
    assert "10-evil.network" not in r["etc_network"], r["etc_network"]
    assert "evil-box" not in r["instances"] and "work-dev,RUNNING" in r["instances"], \
        r["instances"]
    assert _result(second)["counts"]["changes"] == 0, _result(second)
    serial = second.serial
    warning = next((line for line in serial.splitlines()
                    if "WARNING: ignored on the unencrypted persistent partition" in line), "")
    for name in ("infra.yml", "firewall.nft", "network", "identity/root-password-hash",
                 "identity/ssh/authorized_keys"):
        assert name in warning, (name, warning, serial[-3000:])
    assert "network/ on the persistent partition ignored" in serial, serial[-3000:]


def test_luks_btrfs_pool_created_unattended_holds_incus(luks_boots: tuple[Boot, ...]) -> None:
    first = luks_boots[0]
    _check_created(first, "luks-btrfs", unattended=True)
    r = first.report
    assert "type: LUKS2" in r["luks"], r["luks"]
    assert r["incus_mount"].endswith(" btrfs"), r["incus_mount"]
    assert r["storage_driver"] == "btrfs", r["storage_driver"]
    assert r["storage_source"] == "/run/anklume/pool/incus-storage", r["storage_source"]
    # TPM2 enrolled (PCR 7) with a recovery key: shown once on the console, never journaled.
    assert r["tpm"] == "2" and r["luks_tokens"] == "systemd-tpm2,systemd-recovery", \
        (r["luks_tokens"], _logs(first))
    assert r["luks_tpm2_pcrs"] == "7", r["luks_tpm2_pcrs"]
    serial = first.serial
    shown = serial[serial.index("shown only this once"):]
    assert RECOVERY_KEY.search(shown), serial[-3000:]
    assert r["journal_recovery_keys"] == "0", r["journal_recovery_keys"]


def test_luks_btrfs_pool_unlocks_and_everything_is_back(luks_boots: tuple[Boot, ...]) -> None:
    """Without the TPM it was enrolled with, the pool asks for its passphrase."""
    first, second = luks_boots[:2]
    _check_unlocked(first, second)
    assert "wrong passphrase" not in second.serial
    # The administrator's key from the answers logs in: sshd reads it in the pool's vault.
    said = _b64(second.report, "admin_ssh_b64")
    assert second.report["admin_ssh_rc"] == "0" and "admin-IN" in said, said


def test_luks_btrfs_pool_unlocks_with_its_tpm_without_asking(luks_boots: tuple[Boot, ...]) -> None:
    first, tpm_boot = luks_boots[0], luks_boots[3]
    _check_unlocked(first, tpm_boot)
    assert PROMPT not in tpm_boot.serial, tpm_boot.serial[-3000:]


def test_zfs_pool_imported_from_a_freshly_flashed_stick(zfs_boots: tuple[Boot, ...]) -> None:
    first, _, third = zfs_boots
    r = third.report
    assert r["unit.anklume-firstboot.service"] == "active", _logs(third)
    record = json.loads(_b64(r, "record_b64") or "{}")
    assert record.get("action") == "import", record
    assert record.get("zpool_guid") == json.loads(_b64(first.report, "record_b64"))["zpool_guid"]
    assert r["incus_mount"] == "anklume/incus zfs", r["incus_mount"]
    assert r["marker_read"] == first.report["marker_written"], (r["marker_read"], _logs(third))
    res = _result(third)
    # One change: the isolation table (the new stick had only the default one); nothing of
    # Incus is made again.
    assert res["outcome"] == "success" and res["counts"]["changes"] == 1, (res, _logs(third))
    agent_log = _b64(r, "agent_log_b64")
    assert "nftables applied" in agent_log and "Importing shipped image" not in agent_log, \
        agent_log
    assert "work-dev,RUNNING" in r["instances"], r["instances"]
    assert r["root_shadow"] == password_hash(ROOT_PASSWORD), r["root_shadow"]


def test_three_wrong_passphrases_then_continue_is_a_degraded_but_healthy_boot(
    luks_boots: tuple[Boot, ...],
) -> None:
    """A user who cannot type the passphrase gets a running machine that says why, nothing
    deployed into RAM instead, and a boot that counts as good (no rollback for a typo)."""
    r = luks_boots[2].report
    serial = luks_boots[2].serial
    assert "wrong passphrase (try 3 of 3)" in serial and "3 wrong passphrases" in serial, \
        serial[-3000:]
    assert "state=degraded" in _b64(r, "pool_status_b64"), _b64(r, "pool_status_b64")
    res = _result(luks_boots[2])
    assert res["outcome"] == "degraded" and res["counts"]["changes"] == 0, res
    assert "data pool" in res["errors"][0], res["errors"]
    assert r["unit.anklume-health.service"] == "active", _logs(luks_boots[2])
    assert r["unit.boot-complete.target"] == "active", _logs(luks_boots[2])
    assert "work-dev" not in r["instances"], r["instances"]
    assert "DEGRADED: the data pool is not unlocked" in serial, serial[-3000:]
    # No pool, no vault: root stays locked (its credential is in the pool).
    assert r["root_shadow"].startswith("!"), r["root_shadow"]
    assert "root stays locked: the data pool is not unlocked" in serial, serial[-3000:]
    assert serial.index("DEGRADED: the data pool") < serial.rindex("login:")
