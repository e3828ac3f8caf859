"""The guest side of a boot test: a check unit injected as systemd credentials over SMBIOS.

Nothing here touches the signed UKI or its command line. QEMU puts OEM strings into SMBIOS
type 11; systemd (PID 1, systemd >= 252) imports `io.systemd.credential.binary:NAME=<base64>`
strings as system credentials, and systemd-debug-generator (systemd >= 256) turns
`systemd.extra-unit.<unit>` credentials into unit files and `systemd.unit-dropin.<unit>` into
drop-ins. The generator runs in the initrd and in the final system, hence the unit's
`ConditionPathExists=!/etc/initrd-release`.

The unit runs a shell script (itself a credential) that reports facts as stable lines on a
virtio-serial port (`/dev/virtio-ports/org.anklume.test`), falling back to /dev/ttyS0:

    ANKLUME-TEST key=value
    ANKLUME-TEST-RESULT ok|fail reasons...

and then powers the guest off. Host-side tests assert on those lines (qemu.VM.channel).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

from anklume.vm.qemu import TEST_PORT

UNIT = "anklume-test.service"
SCRIPT_CREDENTIAL = "anklume.test.script"
LINE = re.compile(r"^ANKLUME-TEST (?P<key>[A-Za-z0-9_.-]+)=(?P<value>.*)$", re.M)
RESULT = re.compile(r"^ANKLUME-TEST-RESULT (?P<result>ok|fail)(?P<reasons>.*)$", re.M)
# Made by the script's `reported` (tmpfs: once per boot); the unit's stop waits for it.
REPORTED = "/run/anklume-test.reported"

_UNIT_TEXT = f"""\
[Unit]
Description=anklume VM test: the guest checks itself and reports to the host
# systemd-debug-generator adds this unit in the initrd too: only the booted OS must run it.
ConditionPathExists=!/etc/initrd-release
After=multi-user.target

[Service]
# Type=exec, not oneshot: the script waits for `systemctl is-system-running --wait`, which
# would never return while this unit's own start job was still pending.
Type=exec
ImportCredential={SCRIPT_CREDENTIAL}
ExecStart=/bin/sh ${{CREDENTIALS_DIRECTORY}}/{SCRIPT_CREDENTIAL}
# A restart the guest makes by itself (the health gate's countdown, an update's reboot) stops
# this unit first: the stop waits until the script has said all it had to (`reported`), so a
# restart cannot cut a report short, however short its countdown. A script that never says so
# holds the shutdown for at most 5 minutes.
ExecStop=/bin/sh -c 'i=0; while [ ! -e {REPORTED} ] && [ $$i -lt 600 ]; do \\
    sleep 0.5; i=$$((i + 1)); done'
TimeoutStopSec=330
StandardOutput=journal+console
StandardError=journal+console
"""

# A drop-in on multi-user.target pulls the unit in: [Install] sections of generated units are
# not processed, and the kernel command line (systemd.wants=) is signed, so not ours to change.
_WANTS_DROPIN = f"[Unit]\nWants={UNIT}\n"

# POSIX sh: the script must run on whatever shell the image has. It reports facts, not verdicts,
# except for the final RESULT line, which covers what the guest can judge alone.
_SCRIPT = r"""
port=/dev/virtio-ports/@PORT@
i=0
while [ ! -e "$port" ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
[ -e "$port" ] || port=/dev/ttyS0
say() {
    printf 'ANKLUME-TEST %s\n' "$*" >>"$port"
    [ "$port" = /dev/ttyS0 ] || printf 'ANKLUME-TEST %s\n' "$*" >/dev/ttyS0 2>/dev/null
}
fails=""
fail() { fails="$fails $1"; }
efivar() {  # value bytes of an EFI variable; efivarfs prefixes 4 bytes of attributes
    f=/sys/firmware/efi/efivars/$1
    [ -e "$f" ] || { echo missing; return; }
    cat "$f" | tail -c +5 | od -An -tu1 | tr -s ' \n' ' ' | sed 's/^ //; s/ $//'
}
efistr() {  # UTF-16LE string variable (systemd-boot's Loader* variables), ASCII only
    f=/sys/firmware/efi/efivars/$1
    [ -e "$f" ] || { echo missing; return; }
    cat "$f" | tail -c +5 | tr -d '\000'
}
# Before waiting for a restart (or making one): everything is said, the unit's stop may go on.
reported() { sync; : >@REPORTED@; }
say "check=started"
@BODY@
if [ -z "$fails" ]; then r=ok; else r="fail$fails"; fi
printf 'ANKLUME-TEST-RESULT %s\n' "$r" >>"$port"
[ "$port" = /dev/ttyS0 ] || printf 'ANKLUME-TEST-RESULT %s\n' "$r" >/dev/ttyS0 2>/dev/null
reported
systemctl poweroff --no-block
"""

# The checks of a full boot: the system settled, verity, Secure Boot, the CLI, sshd, ZFS.
_CORE = r"""
# Waits for every start job, the agent's first deploy included (minutes under emulation).
state=$(timeout 900 systemctl is-system-running --wait 2>/dev/null)
say "system_state=$state"
[ "$state" = running ] || fail system_state
failed=$(systemctl list-units --state=failed --plain --no-legend --no-pager \
    | awk '{print $1}' | paste -sd, -)
say "failed_units=$failed"
[ -z "$failed" ] || fail failed_units
for u in $(printf '%s' "$failed" | tr , ' '); do  # why they failed, for the assertion message
    say "failed_log.$u=$(journalctl -b -u "$u" --no-pager -o cat 2>&1 | tail -n 15 | base64 -w0)"
done
# systemd breaks an ordering cycle by dropping a job at random (once it was incus.service).
say "ordering_cycles=$(journalctl -b -o cat --no-pager 2>/dev/null | grep -ci 'ordering cycle')"
say "default_target=$(systemctl get-default)"
say "getty_serial=$(systemctl is-active serial-getty@ttyS0.service)"
say "getty_tty1=$(systemctl is-active getty@tty1.service)"
say "machine_id=$(cat /etc/machine-id)"
say "multi_user=$(systemctl is-active multi-user.target)"
# A boot never hangs: the hardware watchdog armed by PID 1, the boot entries (Troubleshoot).
say "watchdog_usec=$(systemctl show -P RuntimeWatchdogUSec)"
say "watchdog_identity=$(cat /sys/class/watchdog/watchdog0/identity 2>/dev/null)"
say "watchdog_state=$(cat /sys/class/watchdog/watchdog0/state 2>/dev/null)"
say "boot_entries=$(bootctl list --json=short 2>/dev/null | python3 -c '
import json, sys
print(";".join(e.get("title") or e["id"] for e in json.load(sys.stdin)))')"
say "stop_reboot_wanted_by=$(systemctl show -P WantedBy anklume-stop-reboot.service)"

say "cmdline=$(cat /proc/cmdline)"
say "usr_source=$(findmnt -no SOURCE /usr)"
say "usr_fstype=$(findmnt -no FSTYPE /usr)"
say "usr_options=$(findmnt -no OPTIONS /usr)"
say "root_fstype=$(findmnt -no FSTYPE /)"
psrc=$(findmnt -no SOURCE -T /var/lib/anklume/. | tail -n 1)
say "persist_source=$psrc"
say "persist_options=$(findmnt -no OPTIONS -T /var/lib/anklume/. | tail -n 1)"
say "persist_label=$(lsblk -no PARTLABEL "$psrc" 2>/dev/null)"
dev=$(readlink -f "$(findmnt -no SOURCE /usr)")
dm=${dev#/dev/}
if [ -e "/sys/block/$dm/dm/name" ]; then
    say "usr_dm_name=$(cat /sys/block/$dm/dm/name)"
    say "usr_dm_uuid=$(cat /sys/block/$dm/dm/uuid)"
    say "usr_dm_slaves=$(ls /sys/block/$dm/slaves | paste -sd, -)"
    name=$(cat /sys/block/$dm/dm/name)
    if command -v dmsetup >/dev/null; then
        say "usr_dm_table=$(dmsetup table "$name")"
    fi
    if command -v veritysetup >/dev/null; then
        veritysetup status "$name" | sed 's/^ *//; s/: */=/; s/ /_/' | while read -r l; do
            say "usr_verity.$l"
        done
    fi
else
    say "usr_dm_name="
    fail usr_not_dm
fi
units=$(systemctl list-units --plain --no-legend --all 'systemd-veritysetup@*' | awk '{print $1}')
for u in $units; do
    say "veritysetup_unit=$u:$(systemctl is-active "$u")"
done
say "kernel_verity_errors=$(dmesg 2>/dev/null | grep -ci 'verity.*corrupt')"

# Identity and the persistent partition: which disk it came from, and the boot disk (the ESP's).
say "persist_state_b64=$(base64 -w0 /run/anklume/persist 2>/dev/null)"
esp_uuid=$(efistr LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f | tr A-F a-f)
say "esp_disk=$(lsblk -ndo PKNAME "/dev/disk/by-partuuid/$esp_uuid" 2>/dev/null)"
say "persist_disk=$(lsblk -ndo PKNAME "$psrc" 2>/dev/null)"
say "impostor_seen=$(test -e /var/lib/anklume/IMPOSTOR && echo yes || echo no)"
say "impostor_mounts=$(lsblk -nro PARTLABEL,MOUNTPOINTS | awk '$1 == "anklume-persist" && NF > 1' \
    | wc -l)"
say "hostname=$(hostname)"
say "ssh_host_ed25519=$(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null \
    | awk '{print $2}')"
say "ssh_key_link=$(readlink /etc/ssh/ssh_host_ed25519_key)"
# Network: the wired NIC's DHCP address (QEMU user networking hands out 10.0.2.15).
say "net_addrs=$(ip -4 -o addr show scope global 2>/dev/null \
    | awk '$2 ~ /^(en|eth)/ {print $2 "=" $4}' | paste -sd, -)"
say "networkd_file=$(networkctl status 2>/dev/null | sed -n 's/^ *Network File: //p' | head -n 1)"
for n in $(ls /sys/class/net | grep -E '^(en|eth)'); do
    say "networkd_link.$n=$(networkctl status "$n" 2>/dev/null | sed -n 's/^ *Network File: //p')"
done

G=8be4df61-93ca-11d2-aa0d-00e098032b8c  # EFI_GLOBAL_VARIABLE
L=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
sb=$(efivar SecureBoot-$G)
say "secureboot=$sb"
[ "$sb" = 1 ] || fail secureboot
say "setupmode=$(efivar SetupMode-$G)"
say "efivars_sb=$(ls /sys/firmware/efi/efivars/ | grep -E '^(SecureBoot|SetupMode|PK|KEK|db)-' \
    | paste -sd, -)"
say "bootctl_secure_boot=$(bootctl status 2>/dev/null | grep -m1 -i 'secure boot:' | sed 's/^ *//')"
say "lockdown=$(cat /sys/kernel/security/lockdown 2>/dev/null)"
say "loader_entry=$(efistr LoaderEntrySelected-$L)"
say "loader_info=$(efistr LoaderInfo-$L)"
say "stub_info=$(efistr StubInfo-$L)"
say "kernel=$(uname -r)"
say "startup=$(systemd-analyze time 2>/dev/null | head -n 1)"
systemd-analyze blame --no-pager 2>/dev/null | head -n 12 | sed 's/^ *//' | while read -r t u; do
    say "blame.$u=$t"  # the slowest units: boot time under TCG is the CI budget
done
say "critical_chain_b64=$(systemd-analyze critical-chain --no-pager 2>&1 | head -n 25 | base64 -w0)"
( . /etc/os-release; say "os_image_id=${IMAGE_ID:-}"; say "os_image_version=${IMAGE_VERSION:-}" )

if command -v anklume >/dev/null; then
    say "anklume_path=$(command -v anklume)"
    say "anklume_version=$(anklume --version 2>&1 | head -n 1)"
    help=$(anklume --help 2>&1)
    say "anklume_help_rc=$?"
    say "anklume_help_b64=$(printf '%s' "$help" | base64 -w0)"
    detect=$(anklume firstboot detect --json 2>&1)
    say "firstboot_detect_rc=$?"
    say "firstboot_detect_b64=$(printf '%s' "$detect" | base64 -w0)"
else
    say "anklume_path="
    fail anklume_missing
fi

# sshd, socket-activated: a real connection on loopback shows it starts and has host keys.
say "ssh_host_keys=$(ls /etc/ssh/ssh_host_*_key 2>/dev/null | wc -l)"
say "ssh_keyscan=$(timeout 60 ssh-keyscan -T 30 127.0.0.1 2>/dev/null \
    | awk '!/^#/ {print $2}' | sort | paste -sd, -)"

"""


# OpenZFS under Secure Boot (the shared boot only: the probe itself loads the module). Until a
# pool needs it, nothing has loaded it, Incus's start included (image/extra/usr/lib/modprobe.d).
# Then the kernel is locked down, so the module must carry a signature the kernel trusts;
# `zpool` asks for the module the way the wizard will.
ZFS_FACTS = r"""
say "zfs_loaded_before_probe=$(test -d /sys/module/zfs && echo yes || echo no)"
say "incus_drivers=$(incus query /1.0 2>/dev/null | python3 -c '
import json, sys
env = json.load(sys.stdin)["environment"]
print(",".join(sorted(d["Name"] for d in env["storage_supported_drivers"])))')"
out=$(modprobe zfs 2>&1)
say "zfs_modprobe_rc=$?"
say "zfs_modprobe_out=$(printf '%s' "$out" | tr '\n' ' ')"
say "zfs_module=$(cat /sys/module/zfs/version 2>/dev/null)"
say "zfs_kernel_log=$(dmesg 2>/dev/null | grep -iE 'zfs|module verif|key was rejected|lockdown' \
    | tail -n 6 | base64 -w0)"
say "zpool_version=$(zpool version 2>&1 | tr '\n' ' ')"
"""


# A boot on trial (its UKI renamed ..+2.efi by the test) whose health gate fails: the facts of
# each boot, then wait for the restart a trial boot must do; a boot not on trial ends normally.
TRIAL_FACTS = r"""
i=0
while [ ! -e /run/anklume/health-failed ] && [ $i -lt 600 ]; do sleep 1; i=$((i + 1)); done
sleep 1
say "trial.cmdline=$(cat /proc/cmdline)"
say "trial.count_path=$(efistr LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f)"
say "trial.health=$(systemctl is-active anklume-health.service)"
say "trial.boot_complete=$(systemctl is-active boot-complete.target)"
action=$(sed -n 's/^action=//p' /run/anklume/health-failed 2>/dev/null)
say "trial.action=$action"
say "trial.handler_log_b64=$(journalctl -b -u anklume-health-failed.service -o cat --no-pager \
    2>&1 | tail -n 6 | base64 -w0)"
say "trial.firewall=$(systemctl is-active anklume-firewall.service)"
say "trial.incus=$(systemctl is-active incus.service):$(systemctl is-active incus.socket)"
say "trial.health_log_b64=$(journalctl -b -u anklume-health.service -o cat --no-pager 2>&1 \
    | grep -E '^(ok|FAIL) ' | base64 -w0)"
[ "$action" = restart ] && { reported; sleep 900; }
"""

# Failure injection for the trial boot: the isolation table cannot load (the real script, its
# default table's path pointed at nothing), so Incus must not start and the real gate fails; the
# agent does nothing (its deploy would cost minutes per boot and is not what this is about).
FIREWALL_FAILS = "[Service]\nEnvironment=ANKLUME_FIREWALL_DEFAULT=/nonexistent/default.nft\n"
AGENT_IDLE = "[Service]\nExecStart=\nExecStart=/bin/true\n"


def dropin_credentials(dropins: dict[str, str]) -> list[str]:
    """`-smbios` values adding a drop-in to each named unit (systemd-debug-generator)."""
    return [_cred(f"systemd.unit-dropin.{unit}~anklume-test", text)
            for unit, text in dropins.items()]


def extra_credentials(creds: dict[str, str]) -> list[str]:
    """`-smbios` values for plain system credentials (name -> text)."""
    return [_cred(name, text) for name, text in creds.items()]


def _cred(name: str, data: str) -> str:
    # value= is QEMU's comma-separated option syntax; base64 never contains a comma.
    b64 = base64.b64encode(data.encode()).decode()
    return f"type=11,value=io.systemd.credential.binary:{name}={b64}"


def smbios_credentials(script: str | None = None) -> list[str]:
    """The `-smbios` values that make the guest run the check script and power off."""
    script = script if script is not None else check_script()
    return [
        _cred(f"systemd.extra-unit.{UNIT}", _UNIT_TEXT),
        _cred("systemd.unit-dropin.multi-user.target", _WANTS_DROPIN),
        _cred(SCRIPT_CREDENTIAL, script),
    ]


# The agent at boot: its units, what it deployed, and isolation by real traffic between the
# deployed containers (ping from one instance to another's static IP, inside the guest).
# After the first deploy of the embedded default: what `anklume plan` says now (#19: the
# shipped image it imported is part of the plan, now in sync).
PLAN_FACTS = r"""
say "plan_b64=$(anklume plan 2>&1 | base64 -w0)"
"""

AGENT_FACTS = r"""
for u in anklume-firewall.service anklume-agent.service anklume-health.service \
        boot-complete.target anklume-agent.path; do
    say "unit.$u=$(systemctl is-active "$u")"
done
prop() { systemctl show -p "$2" --value "$1"; }
say "t.firewall_done=$(prop anklume-firewall.service ExecMainExitTimestampMonotonic)"
say "t.incus_start=$(prop incus.service ExecMainStartTimestampMonotonic)"
say "t.agent_done=$(prop anklume-agent.service ExecMainExitTimestampMonotonic)"
say "t.health_done=$(prop anklume-health.service ExecMainExitTimestampMonotonic)"
say "agent_exit=$(prop anklume-agent.service ExecMainStatus)"
say "agent_status_text=$(prop anklume-agent.service StatusText)"
ulog() { journalctl -b -u "$1" -o cat --no-pager 2>&1 | tail -n "$2"; }
say "agent_log_b64=$(ulog anklume-agent.service 40 | base64 -w0)"
say "health_log_b64=$(ulog anklume-health.service 12 | base64 -w0)"
say "firewall_log=$(ulog anklume-firewall.service 20 | grep 'anklume:' | tail -n 1)"
say "last_result_b64=$(base64 -w0 /var/lib/anklume/last-result.json 2>/dev/null)"
say "firewall_file=$(test -s /var/lib/anklume/firewall.nft && echo present || echo missing)"
say "nft_table_b64=$(nft list table inet anklume 2>&1 | base64 -w0)"
say "status_b64=$(anklume status 2>&1 | base64 -w0)"
# One row per instance: project,name,state,first IPv4 (further addresses sit on lines of their
# own inside the quoted field: left out here; the count of all of them is reported apart).
say "instances=$(incus list --all-projects -c ens4 --format csv 2>&1 | tr -d '"' \
    | awk -F, 'NF >= 3' | paste -sd ';' -)"
say "addresses=$(incus list --all-projects -c n4 --format csv 2>&1 | grep -c eth0)"
ip_of() {
    incus list --project "$1" "$2" -c 4 --format csv 2>/dev/null | tr -d '"' \
        | awk 'NR == 1 {print $1}'
}
probe() {  # probe NAME PROJECT INSTANCE IP: can that instance ping that address?
    if incus exec --project "$2" "$3" -- busybox ping -c 1 -W 3 "$4" >/dev/null 2>&1; then
        say "probe.$1=ok"
    else
        say "probe.$1=blocked"
    fi
}
# Every machine's bridge port filters its MAC and IPv4 address (#20: no neighbour spoofing).
say "nic_filter.work_dev=$(incus config device get --project work work-dev eth0 \
    security.ipv4_filtering 2>&1):$(incus config device get --project work work-dev eth0 \
    security.mac_filtering 2>&1)"
if [ -n "$(ip_of work work-dev)" ]; then
    gw=$(incus exec --project work work-dev -- ip route show default 2>/dev/null | awk '{print $3}')
    probe work_dev_to_gateway work work-dev "$gw"
    probe work_dev_to_work_web work work-dev "$(ip_of work work-web)"
    probe work_dev_to_perso_box work work-dev "$(ip_of perso perso-box)"
    probe perso_box_to_admin_ctl perso perso-box "$(ip_of admin admin-ctl)"
fi
"""

# Steady state (a later boot of the same disk): every timer's job run now (the settle window
# that timers would otherwise need hours for), then no failed unit, and what repart did.
# CPU between the appliance and its containers (image/extra/.../system.slice.d): the cgroup
# weights, then two containers and a transient service of the appliance's own burn CPU side by
# side; the CPU time each got over the same 6 s (usage_usec deltas, not wall time).
CPU_FACTS = r"""
say "cpu.weight.system=$(cat /sys/fs/cgroup/system.slice/cpu.weight)"
say "cpu.weight.containers=$(cat /sys/fs/cgroup/lxc.payload.*/cpu.weight | sort -u | paste -sd, -)"
spin='timeout 14 sh -c "while :; do :; done"'  # incus exec takes seconds to start one
incus exec --project work work-dev -- sh -c "$spin" >/dev/null 2>&1 &
incus exec --project perso perso-box -- sh -c "$spin" >/dev/null 2>&1 &
systemd-run --quiet --unit=anklume-test-spin sh -c "$spin"
sleep 5
usage() { sed -n 's/^usage_usec //p' "/sys/fs/cgroup/$1/cpu.stat" 2>/dev/null || echo 0; }
groups="system.slice/anklume-test-spin.service lxc.payload.work_work-dev"
groups="$groups lxc.payload.perso_perso-box"
u0=""; for g in $groups; do u0="$u0 $(usage "$g")"; done
sleep 6
u1=""; for g in $groups; do u1="$u1 $(usage "$g")"; done
say "cpu.spin_usec=$(echo $u0 $u1 | awk '{print $4 - $1 "," $5 - $2 "," $6 - $3}')"
wait
"""

STEADY_FACTS = r"""
timers=$(systemctl list-units --type=timer --state=active --plain --no-legend | awk '{print $1}')
for t in $timers; do
    svc=$(systemctl show -p Triggers --value "$t")
    [ -n "$svc" ] || continue
    timeout 300 systemctl start "$svc" >/dev/null 2>&1
    say "timer_job.$svc=$(systemctl show -p Result --value "$svc")"
done
# Settled: no job left in systemd's queue (what the jobs above may have started), checked,
# not slept for.
i=0
while [ -n "$(systemctl list-jobs --no-legend 2>/dev/null)" ] && [ $i -lt 120 ]; do
    sleep 1; i=$((i + 1))
done
say "settled_jobs=$(systemctl list-jobs --no-legend 2>/dev/null | awk '{print $2}' | paste -sd, -)"
failed=$(systemctl list-units --state=failed --plain --no-legend --no-pager \
    | awk '{print $1}' | paste -sd, -)
say "settled_failed_units=$failed"
say "repart_log_b64=$(journalctl -b -u systemd-repart.service -o cat --no-pager 2>&1 | tail -n 8 \
    | base64 -w0)"
say "settled_verity_errors=$(dmesg 2>/dev/null | grep -ci 'verity.*corrupt')"
"""

# The next boot takes the "Run from RAM" entry of the same UKI (a one-shot choice in an EFI
# variable, what picking it in systemd-boot's menu does once).
ONESHOT_TORAM = r"""
entry=$(bootctl list --json=short 2>/dev/null | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if "Run from RAM" in (e.get("title") or "") or "@toram" in e.get("id", ""):
        print(e["id"], e.get("title") or "", sep="\t"); break
')
id=$(printf '%s' "$entry" | cut -f1)
# Running from RAM, the ESP is released (no entries to list): the entry booted now is the one.
sel=$(efistr LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f)
case $sel in *@toram) [ -n "$id" ] || id=$sel ;; esac
say "toram_entry_id=$id"
say "toram_entry_title=$(printf '%s' "$entry" | cut -f2)"
bootctl set-oneshot "$id" >/dev/null 2>&1 || python3 -c '
import sys
# efivarfs: 4 attribute bytes (non-volatile, boot and runtime access), then the UTF-16 value.
with open(sys.argv[1], "wb", buffering=0) as f:
    f.write(b"\x07\x00\x00\x00" + (sys.argv[2] + "\0").encode("utf-16-le"))
' /sys/firmware/efi/efivars/LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f "$id"
say "oneshot=$(efistr LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f)"
"""

# Pull the boot disk out, then use the OS (runs after _CORE, which finds the disks): tells the
# host when to unplug, waits until the disk is gone, drops the page cache (or files read during
# boot would still be served), reads thousands of files no boot reads, runs a few programs and
# starts and stops a service.
UNPLUG_WORKLOAD = r"""
bootdev=$(lsblk -ndo PKNAME "/dev/disk/by-partuuid/$esp_uuid" 2>/dev/null)
[ -n "$bootdev" ] || bootdev=$(lsblk -ndo PKNAME "$psrc" 2>/dev/null)
say "unplug_disk=$bootdev"
files=$(find /usr/lib/modules /usr/share/zoneinfo -type f 2>/dev/null | head -n 3000)
sync
say "unplug=ready"
i=0
while [ -e "/sys/block/$bootdev" ] && [ $i -lt 240 ]; do sleep 0.5; i=$((i + 1)); done
say "unplug_gone=$(test -e "/sys/block/$bootdev" && echo no || echo yes)"
echo 3 >/proc/sys/vm/drop_caches
n=0
bad=0
for f in $files; do
    n=$((n + 1))
    cat "$f" >/dev/null 2>&1 || bad=$((bad + 1))
done
say "workload.files=$n"
say "workload.read_errors=$bad"
ran=0
for cmd in "ls /" "stat /" "uname -a" "id" "date" "df /" "sort /etc/os-release" "du -s /etc"; do
    $cmd >/dev/null 2>&1 && ran=$((ran + 1))
done
say "workload.programs_ran=$ran"
systemctl start systemd-hostnamed.service >/dev/null 2>&1
a=$(systemctl is-active systemd-hostnamed.service 2>&1)
systemctl stop systemd-hostnamed.service >/dev/null 2>&1
say "workload.service=$a:$(systemctl is-active systemd-hostnamed.service 2>&1)"
"""

# Live mode's logins and an ANKLUME-CFG volume on a machine provisioned to stay in live mode:
# root is locked again at this boot (the session password of the previous boot lived in RAM),
# so sulogin, the shell of every emergency and rescue stop, gives nothing (on a pty of its own,
# Enter typed at its prompt); the volume made no pool.
LIVE_LOCK_FACTS = r"""
say "root_shadow_live=$(getent shadow root | cut -d: -f2)"
say "sulogin_locked=$(printf '\n' | timeout 30 script -qec 'sulogin "$(tty)"' /dev/null 2>&1 \
    | grep -c 'the root account is locked')"
say "cfg_volume=$(readlink -f /dev/disk/by-label/ANKLUME-CFG 2>/dev/null)"
say "cfg_firstboot_b64=$(journalctl -b -u anklume-firstboot.service -o cat --no-pager 2>&1 \
    | tail -n 5 | base64 -w0)"
say "cfg_record=$(test -e /var/lib/anklume/firstboot.json && echo present || echo absent)"
say "cfg_unit_ran=$(systemctl show -P ConditionResult anklume-firstboot.service)"
say "ssh_socket=$(systemctl is-active ssh.socket)"
say "esp_cred_listed=$(systemd-creds --system list --no-legend --no-pager 2>/dev/null \
    | grep -c '^ssh.authorized_keys.root')"
say "esp_cred_key=$(cat /root/.ssh/authorized_keys 2>/dev/null | grep -c planted-on-the-esp)"
"""

# What the initrd made of the persistent partition (state, device, reason).
PERSIST_FACTS = r"""
say "persist_status_b64=$(base64 -w0 /run/anklume/persist 2>/dev/null)"
"""

# Run from RAM: where /usr and the persistent state come from, and the all-clear.
TORAM_FACTS = r"""
say "cmdline=$(cat /proc/cmdline)"
say "toram_status_b64=$(base64 -w0 /run/anklume/toram/status 2>/dev/null)"
dev=$(readlink -f "$(findmnt -no SOURCE /usr)")
say "usr_slaves=$(ls "/sys/block/${dev#/dev/}/slaves" 2>/dev/null | paste -sd, -)"
say "toram_log_b64=$(journalctl -b -u anklume-toram.service -o cat --no-pager 2>&1 | tail -n 6 \
    | base64 -w0)"
"""
TORAM_WAIT_REMOVABLE = r"""
i=0
while [ ! -e /run/anklume/toram/removable ] && [ $i -lt 1200 ]; do sleep 1; i=$((i + 1)); done
say "toram_removable=$(test -e /run/anklume/toram/removable && echo yes || echo no)"
say "toram_ready_unit=$(systemctl is-active anklume-toram-ready.service)"
"""

# After the checks of the first boot: a mistake in infra.yml, which the path unit applies at
# once (the agent records it as invalid) and which the next boot finds at boot.
BROKEN_INFRA = "schema_version: 1\nproject_name: anklume\ndomains:\n  work:\n    machnes: {}\n"
EDIT_INFRA = r"""
printf '@BROKEN@' >/var/lib/anklume/infra.yml
i=0
while [ $i -lt 180 ]; do
    grep -Eq '"trigger": ?"path"' /var/lib/anklume/last-result.json 2>/dev/null && break
    sleep 1; i=$((i + 1))
done
say "path_result_b64=$(base64 -w0 /var/lib/anklume/last-result.json 2>/dev/null)"
""".replace("@BROKEN@", BROKEN_INFRA)


def check_script(extra: str = "", core: bool = True) -> str:
    """The injected script: the full boot checks (`core`), then `extra`, then the result line
    and a power-off. Without `core`, only `extra` runs (boots that check one thing quickly)."""
    body = (_CORE if core else "") + extra
    script = (_SCRIPT.replace("@PORT@", TEST_PORT).replace("@REPORTED@", REPORTED)
              .replace("@BODY@", body))
    return "#!/bin/sh\n# anklume VM test checks (injected)\n" + script


@dataclass
class Report:
    """What the guest said on the test channel."""

    facts: dict[str, str] = field(default_factory=dict)
    multi: dict[str, list[str]] = field(default_factory=dict)
    result: str | None = None
    reasons: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> str:
        if key not in self.facts:
            raise KeyError(f"the guest did not report {key!r}; reported: {sorted(self.facts)}")
        return self.facts[key]

    def get(self, key: str, default: str = "") -> str:
        return self.facts.get(key, default)

    def prefixed(self, prefix: str) -> dict[str, str]:
        return {k[len(prefix) :]: v for k, v in self.facts.items() if k.startswith(prefix)}


def parse_report(text: str) -> Report:
    r = Report()
    for m in LINE.finditer(text):
        key, value = m.group("key"), m.group("value").rstrip()
        r.multi.setdefault(key, []).append(value)
        r.facts[key] = value
    result = RESULT.search(text)
    if result:
        r.result = result.group("result")
        r.reasons = result.group("reasons").split()
    return r


def cmdline_value(cmdline: str, key: str) -> str | None:
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\S+)", cmdline)
    return m.group(1) if m else None
