"""`anklume vm` and `anklume apply --host`, as a user runs them: the built image started by the
CLI (Secure Boot from setup mode, a TPM, the data disk, SSH on a loopback port), reached with
the key given at the start, sent an infra from "the laptop" (this host), stopped, started
again as the same machine.

Two starts of one machine, each stopped once SSH has answered (the agent's deploy is not what
this is about: the machine starts with a one-domain infra, no containers).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from anklume.image.artifacts import Artifacts
from anklume.vm import builds, qemu

pytestmark = pytest.mark.vm

NAME = "first-contact"
GLOBAL = "global:\n  addressing:\n    base_octet: 10\n    zone_base: 100\n"
TINY = ("schema_version: 1\nproject_name: anklume\n" + GLOBAL
        + "domains:\n  lab:\n    description: First contact\n    machines: {}\n")
SENT = TINY + "  sent:\n    description: Sent from the laptop\n    machines: {}\n"
SSH_READY_TIMEOUT = 900  # a TCG boot to sshd, on a host running another boot beside it


@dataclass
class UserVM:
    starts: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    facts: list[dict[str, str]] = field(default_factory=list)
    serial: list[str] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    apply: subprocess.CompletedProcess[str] | None = None
    apply_again: subprocess.CompletedProcess[str] | None = None
    status_json: str = ""
    after_apply: dict[str, str] = field(default_factory=dict)
    changed_key: subprocess.CompletedProcess[str] | None = None
    listed: str = ""
    fresh_refused: subprocess.CompletedProcess[str] | None = None


FACTS = r"""
echo "machine_id=$(cat /etc/machine-id)"
. /usr/lib/os-release; echo "version=$IMAGE_VERSION"
echo "secureboot=$(od -An -tu1 -j4 -N1 \
    /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | tr -d ' ')"
echo "tpm=$(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null)"
echo "data_disk=$(ls /dev/disk/by-id | grep -c anklume-vm-data)"
echo "host_key=$(cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub)"
echo "infra_sha=$(sha256sum /var/lib/anklume/infra.yml | cut -d' ' -f1)"
"""


def _kv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def user_vm(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserVM]:
    work = tmp_path_factory.mktemp("user-vm")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (work / "tiny.yml").write_text(TINY)
    (work / "sent.yml").write_text(SENT)
    known = work / "known_hosts"
    logs = builds.log_root()
    env = {**os.environ, "ANKLUME_VM_DIR": str(logs / "user-vm")}
    exe = str(builds.anklume_exe())

    def anklume(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *args], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def ssh_opts(port: int) -> list[str]:
        return ["-p", str(port), "-i", str(key), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=accept-new",
                "-o", "ConnectTimeout=10"]

    def ssh(port: int, script: str, deadline: float) -> str:
        while True:
            r = subprocess.run(["ssh", *ssh_opts(port), "root@127.0.0.1", script],
                               capture_output=True, text=True, timeout=120)
            if r.returncode == 0 or time.monotonic() > deadline:
                assert r.returncode == 0, f"ssh never answered: {r.stderr}"
                return r.stdout
            time.sleep(5)

    u = UserVM()
    machine_dir = logs / "user-vm" / NAME
    try:
        for n in (1, 2):
            t0 = time.monotonic()
            start = anklume("vm", "start", "--detach", "--name", NAME, "--ssh-key",
                            f"{key}.pub", "--infra", str(work / "tiny.yml"), "--credential",
                            "anklume.firstboot.skip=1", "--memory", "3072", "--cpus", "1",
                            *(["--fresh"] if n == 1 else []), str(artifacts.raw))
            u.starts.append(start)
            assert start.returncode == 0, start.stdout + start.stderr
            port = int(re.search(r"ssh -p (\d+) root@127\.0\.0\.1", start.stdout).group(1))
            u.facts.append(_kv(ssh(port, FACTS, time.monotonic() + SSH_READY_TIMEOUT)))
            if n == 1:
                u.listed = anklume("vm", "list").stdout
                u.fresh_refused = anklume("vm", "start", "--fresh", "--name", NAME,
                                          str(artifacts.raw))
                remote = ["--host", "root@127.0.0.1", "--port", str(port), "--identity",
                          str(key), "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes"]
                u.apply = anklume("apply", *remote, "--yes", str(work / "sent.yml"))
                u.apply_again = anklume("apply", *remote, "--yes", str(work / "sent.yml"))
                u.status_json = ssh(port, "anklume status --json", time.monotonic() + 60)
                u.after_apply = _kv(ssh(port, FACTS + 'echo "bridge=$(ip -br link show '
                                        'net-sent 2>/dev/null | cut -d" " -f1)"',
                                        time.monotonic() + 60))
                # The appliance's host key as ssh knows it, changed: the next connection is
                # refused before anything is sent.
                forged = work / "forged_known_hosts"
                other = work / "other"
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                               check=True)
                pub = (work / "other.pub").read_text().split()
                forged.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
                u.changed_key = anklume("plan", "--host", "root@127.0.0.1", "--port", str(port),
                                        "--identity", str(key), "-o",
                                        f"UserKnownHostsFile={forged}", "-o", "BatchMode=yes",
                                        str(work / "sent.yml"))
            stop = anklume("vm", "stop", "--name", NAME, *(["--force"] if n == 2 else []))
            u.stops.append(stop.stdout.strip())
            seconds = time.monotonic() - t0
            serial = (machine_dir / "log" / "serial.log")
            u.serial.append(serial.read_text(errors="replace") if serial.exists() else "")
            # The run's cost summary (tests/conftest.py) counts this machine's boots too.
            run_log = logs / f"user-vm-{n}"
            qemu.record_run(run_log, f"user-vm-{n}", seconds)
            (run_log / "serial.log").write_text(u.serial[-1])
        yield u
    finally:
        anklume("vm", "stop", "--name", NAME, "--force")


def test_the_vm_boots_the_image_as_real_hardware_would(user_vm: UserVM,
                                                       artifacts: Artifacts) -> None:
    """Secure Boot on after the image enrolled its own keys from setup mode, a TPM 2.0, the
    blank data disk for the wizard, SSH with the key given to `anklume vm start`."""
    first = user_vm.facts[0]
    assert first["version"] == artifacts.version, first
    assert first["secureboot"] == "1" and first["tpm"] == "2", first
    assert first["data_disk"] == "1", first
    assert "Custom Secure Boot keys successfully enrolled" in user_vm.serial[0]
    out = user_vm.starts[0].stdout
    assert "made its disk from" in out and "made a blank 20G data disk" in out, out
    assert re.search(rf"{NAME} +running, ssh -p \d+ root@127\.0\.0\.1", user_vm.listed), \
        user_vm.listed
    refused = user_vm.fresh_refused
    assert refused is not None and refused.returncode != 0, refused
    assert "is running" in refused.stderr, refused.stderr
    assert user_vm.stops[0] == f"machine {NAME} shut down", user_vm.stops


def test_a_second_start_is_the_same_machine(user_vm: UserVM) -> None:
    """Its disk, firmware variables and TPM state persisted: the same machine-id and SSH host
    key (kept on its persistent partition), no second key enrolment, and the infra sent before
    is still the one on the appliance."""
    first, second = user_vm.facts
    assert second["machine_id"] == first["machine_id"], (first, second)
    assert second["host_key"] == first["host_key"], (first, second)
    assert "Custom Secure Boot keys successfully enrolled" not in user_vm.serial[1]
    assert second["tpm"] == "2" and second["secureboot"] == "1", second
    assert second["infra_sha"] == user_vm.after_apply["infra_sha"], (second, user_vm.after_apply)
    assert "powered off" in user_vm.stops[1], user_vm.stops


def test_apply_host_plans_installs_and_applies_on_the_appliance(user_vm: UserVM) -> None:
    """Validated on the laptop, the appliance's plan shown, installed where its agent reads
    infra.yml, applied: the new domain's bridge exists there."""
    import hashlib

    r = user_vm.apply
    assert r is not None and r.returncode == 0, (r.stdout, r.stderr) if r else None
    assert re.search(r"^\+ .*net-sent", r.stdout, re.M), r.stdout  # the plan, then done
    assert "installed as /var/lib/anklume/infra.yml" in r.stdout, r.stdout
    after = user_vm.after_apply
    assert after["infra_sha"] == hashlib.sha256(SENT.encode()).hexdigest(), after
    assert after["bridge"] == "net-sent", after


def test_apply_host_again_changes_nothing(user_vm: UserVM) -> None:
    r = user_vm.apply_again
    assert r is not None and r.returncode == 0, (r.stdout, r.stderr) if r else None
    assert "No changes: " in r.stdout, r.stdout


def test_status_json_on_the_booted_machine(user_vm: UserVM, artifacts: Artifacts) -> None:
    """`anklume status --json` there, against what this test knows of the machine."""
    d = json.loads(user_vm.status_json)
    assert d["schema"] == 2, d
    m = d["machine"]
    assert m["update"]["slot"] == "A" and m["update"]["other"] == [], m["update"]
    assert m["isolation"] == "loaded" and m["gpus"] == [], m
    assert m["appliance"] is True and m["version"] == artifacts.version, m
    assert m["secure_boot"] == "on" and m["tpm"] is True, m
    assert m["has_pool"] is False and m["boot_from"] == "disk", m
    assert any(w.startswith("live mode") for w in d["warnings"]), d["warnings"]
    last = d["last_result"]
    assert last["outcome"] == "success" and last["counts"]["failed"] == 0, last


def test_apply_host_refuses_a_changed_host_key(user_vm: UserVM) -> None:
    """ssh's own refusal, before anything is sent: a nonzero exit and its message."""
    r = user_vm.changed_key
    assert r is not None and r.returncode != 0, r
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr or \
        "Host key verification failed" in r.stderr, r.stderr
