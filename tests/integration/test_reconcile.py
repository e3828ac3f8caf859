"""The reconcile agent against the real Incus: apply, converge, edit, prune, crash, errors.

Every test uses its own project_name and domains (default zone_base 100 addressing) and removes
everything it made: `reconcile` of an empty infra with --prune --force for its project_name,
which only ever deletes resources carrying that name's ownership marker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from anklume.agent.incus_api import Incus, IncusError
from anklume.agent.incus_state import vm_unsupported
from anklume.agent.model import GlobalSettings, Infra
from anklume.agent.reconcile import reconcile
from anklume.agent.validate import load

pytestmark = pytest.mark.incus

IMAGE = "anklume/busybox"
ANKLUME = str(Path(sys.executable).parent / "anklume")
IP_TIMEOUT = 30  # seconds for a container to get its DHCP lease


@pytest.fixture(scope="module")
def incus() -> Incus:
    return Incus()


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([ANKLUME, *args], capture_output=True, text=True, timeout=timeout)


def tear_down(project_name: str) -> None:
    report = reconcile(Infra(project_name, GlobalSettings(), ()), prune=True, force=True)
    assert report.ok, [o.error for o in report.result.failed]


class _Owned(list):
    """Project names a test works in: cleared of leftovers (an interrupted earlier run) when
    named, and removed again after the test, whatever happened."""

    def append(self, name: str) -> None:
        tear_down(name)
        super().append(name)


@pytest.fixture
def owned(request) -> Iterator[list[str]]:
    names = _Owned()
    yield names
    for n in names:
        tear_down(n)


def write(tmp_path: Path, doc: dict, name: str = "infra.yml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return p


def instances(incus: Incus) -> dict[tuple[str, str], dict]:
    got = incus.get("/1.0/instances", params={"recursion": "1", "all-projects": "true"})
    return {(i["project"], i["name"]): i for i in got}


def ipv4(incus: Incus, project: str, name: str) -> str | None:
    state = incus.get(f"/1.0/instances/{name}/state", project=project)
    for a in ((state.get("network") or {}).get("eth0") or {}).get("addresses") or []:
        if a["family"] == "inet":
            return a["address"]
    return None


def wait_ip(incus: Incus, project: str, name: str, want: str) -> None:
    deadline = time.monotonic() + IP_TIMEOUT
    got = None
    while time.monotonic() < deadline:
        got = ipv4(incus, project, name)
        if got == want:
            return
        time.sleep(0.3)
    # DHCP to the host passes the `inet anklume` input chain: one table per host, so a suite
    # applying another infra at the same time can cut this one's DHCP off. Say whose it is.
    nft = subprocess.run(["nft", "list", "table", "inet", "anklume"], capture_output=True,
                         text=True).stdout
    bridges = sorted({w.strip('"') for w in nft.split() if w.startswith('"net-')})
    pytest.fail(f"{project}/{name}: eth0 has {got}, expected {want} within {IP_TIMEOUT} s "
                f"(host firewall table now covers {', '.join(bridges) or 'nothing'})")


def incus_actions(stdout: str) -> list[str]:
    """The plan's Incus lines (the firewall's, when the test checks it, is checked apart)."""
    return [x for x in stdout.splitlines()
            if x[:2] in ("+ ", "~ ", "- ", "> ") and not x.startswith("~ firewall")]


def converged(r: subprocess.CompletedProcess) -> None:
    # Strict: the firewall is compared as nft's JSON, so a second run changes nothing at all
    # (these suites run under one lock: nobody replaces the table meanwhile).
    assert r.returncode == 0, r.stdout + r.stderr
    assert "~ firewall" not in r.stdout, r.stdout
    assert incus_actions(r.stdout) == [], r.stdout
    assert "changes=0" in r.stderr and r.stdout.startswith("No changes: "), r.stdout


def exists(incus: Incus, path: str, project: str | None = None) -> bool:
    try:
        incus.get(path, project=project)
        return True
    except IncusError:
        return False


# ----------------------------------------------------------------------------------------------

def test_default_infra_applies_matches_and_converges(incus, owned):
    owned.append("anklume")
    infra = load(None)
    r = cli("apply", "--default-image", IMAGE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Reconcile done" in r.stderr

    for d in infra.enabled_domains:
        p = incus.get(f"/1.0/projects/{d.name}")
        assert p["config"]["features.images"] == "false"
        assert p["config"]["features.profiles"] == "true"
        n = incus.get(f"/1.0/networks/{d.bridge}")
        assert n["config"]["ipv4.address"] == f"{d.gateway}/24"
        assert n["config"]["ipv4.nat"] == "true" and n["config"]["ipv6.address"] == "none"
        prof = incus.get("/1.0/profiles/default", project=d.name)
        assert prof["devices"]["eth0"]["network"] == d.bridge
        assert prof["devices"]["root"]["pool"] == "default"
        for m in d.machines:
            i = incus.get(f"/1.0/instances/{m.name}", project=d.name)
            assert i["status"] == "Running"
            assert i["devices"]["eth0"]["ipv4.address"] == str(m.ip)
            assert i["config"]["security.protection.delete"] == "true"
    for d in infra.enabled_domains:
        for m in d.machines:
            wait_ip(incus, d.name, m.name, str(m.ip))

    again = cli("apply", "--default-image", IMAGE)
    converged(again)
    assert again.stdout.startswith(
        "No changes: 3 projects, 3 networks, 3 profiles, 4 instances already match")
    converged(cli("plan", "--default-image", IMAGE))


def infra_doc(domains: dict) -> dict:
    return {"project_name": "itest", "global": {"default_os_image": IMAGE}, "domains": domains}


def test_edits_are_planned_and_applied_exactly(incus, owned, tmp_path):
    owned.append("itest")
    v1 = infra_doc({
        "ita": {"trust_level": "trusted", "ephemeral": True, "machines": {
            "ita-1": {"ip": "10.110.0.11"}}},
        "itb": {"trust_level": "untrusted", "ephemeral": True, "machines": {
            "itb-1": {"ip": "10.140.0.11"}}},
    })
    r = cli("apply", str(write(tmp_path, v1)))
    assert r.returncode == 0, r.stdout + r.stderr

    v2 = infra_doc({"ita": {"trust_level": "trusted", "ephemeral": True, "machines": {
        "ita-1": {"ip": "10.110.0.12"}, "ita-2": {"ip": "10.110.0.13"}}}})
    path = str(write(tmp_path, v2, "v2.yml"))
    plan = cli("plan", path)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert "~ instance ita/ita-1  (restart needed)" in lines
    assert "    devices.eth0.ipv4.address: 10.110.0.11 -> 10.110.0.12" in lines
    assert "+ instance ita/ita-2" in lines
    assert "> start instance ita/ita-2" in lines
    # The removed domain is only listed until --prune.
    assert any(x.startswith("= kept instance itb/itb-1") for x in lines)
    assert any(x.startswith("= kept project itb") for x in lines)
    assert incus_actions(plan.stdout) == [
        "~ instance ita/ita-1  (restart needed)", "+ instance ita/ita-2",
        "> start instance ita/ita-2"]

    r = cli("apply", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert exists(incus, "/1.0/instances/itb-1", "itb")
    wait_ip(incus, "ita", "ita-1", "10.110.0.12")
    wait_ip(incus, "ita", "ita-2", "10.110.0.13")

    plan = cli("plan", path, "--prune")
    assert incus_actions(plan.stdout) == [
        "- instance itb/itb-1  (not declared)", "- project itb  (not declared)",
        "- network net-itb  (not declared)"]
    r = cli("apply", path, "--prune")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not exists(incus, "/1.0/projects/itb")
    assert not exists(incus, "/1.0/networks/net-itb")
    assert {k for k in instances(incus) if k[0] in ("ita", "itb")} == {
        ("ita", "ita-1"), ("ita", "ita-2")}
    converged(cli("apply", path, "--prune"))


def test_orphans_prune_and_protection(incus, owned, tmp_path):
    owned.append("itest")
    v1 = infra_doc({"itc": {"trust_level": "untrusted", "machines": {
        "itc-keep": {"ip": "10.140.0.21"},
        "itc-prot": {"ip": "10.140.0.22"},
        "itc-eph": {"ip": "10.140.0.23", "ephemeral": True}}}})
    r = cli("apply", str(write(tmp_path, v1)))
    assert r.returncode == 0, r.stdout + r.stderr
    # Made by hand in our project, without our marker: never ours to touch.
    incus.request("POST", "/1.0/instances", project="itc", body={
        "name": "itc-manual", "source": {"type": "image", "alias": IMAGE}})
    try:
        v2 = infra_doc({"itc": {"trust_level": "untrusted", "machines": {
            "itc-keep": {"ip": "10.140.0.21"}}}})
        path = str(write(tmp_path, v2, "v2.yml"))

        r = cli("apply", path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "= kept instance itc/itc-eph: not declared any more" in r.stdout
        assert "= kept instance itc/itc-prot: not declared any more" in r.stdout
        assert {"itc-eph", "itc-prot"} <= {n for p, n in instances(incus) if p == "itc"}

        r = cli("apply", path, "--prune")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "- instance itc/itc-eph  (not declared)" in r.stdout
        assert "= kept instance itc/itc-prot: not declared but " \
               "security.protection.delete=true" in r.stdout
        names = {n for p, n in instances(incus) if p == "itc"}
        assert names == {"itc-keep", "itc-prot", "itc-manual"}

        r = cli("apply", path, "--prune", "--force")
        assert r.returncode == 0, r.stdout + r.stderr
        names = {n for p, n in instances(incus) if p == "itc"}
        assert names == {"itc-keep", "itc-manual"}
        assert "itc-manual" not in r.stdout

        # Even with nothing declared, the hand-made instance stays, and so does its project.
        report = reconcile(Infra("itest", GlobalSettings(), ()), prune=True, force=True)
        assert {n.label for n in report.plan.kept} >= {"project itc", "network net-itc"}
        assert exists(incus, "/1.0/instances/itc-manual", "itc")
    finally:
        incus.request("DELETE", "/1.0/instances/itc-manual", project="itc")


def test_sigkill_mid_apply_then_converges(incus, owned, tmp_path):
    owned.append("itest")
    machines = {f"itk-{n}": {"ip": f"10.150.0.{n}"} for n in range(1, 11)}
    doc = infra_doc({"itk": {"trust_level": "disposable", "ephemeral": True,
                             "machines": machines}})
    path = str(write(tmp_path, doc))
    proc = subprocess.Popen([ANKLUME, "apply", path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p == "itk" for p, _ in instances(incus)):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "apply finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    made = [n for p, n in instances(incus) if p == "itk"]
    assert len(made) < len(machines) or any(
        i["status"] != "Running" for (p, _), i in instances(incus).items() if p == "itk"), \
        "the kill landed after the work was done: nothing to converge"

    r = cli("apply", path)
    assert r.returncode == 0, r.stdout + r.stderr
    converged(cli("apply", path))
    got = {n: i["status"] for (p, n), i in instances(incus).items() if p == "itk"}
    assert got == dict.fromkeys(machines, "Running")
    wait_ip(incus, "itk", "itk-10", "10.150.0.10")


def test_one_bad_resource_is_reported_and_the_others_applied(incus, owned, tmp_path):
    owned.append("itest")
    no_vms = vm_unsupported(incus.get("/1.0"))
    machines = {"ite-ok": {"ip": "10.110.0.31"},
                "ite-bad": {"ip": "10.110.0.32", "config": {"limits.memory": "lots"}}}
    if no_vms:  # this host: no vhost_vsock; a VM must be refused with that reason
        machines["ite-vm"] = {"ip": "10.110.0.33", "type": "vm"}
    doc = infra_doc({"ite": {"trust_level": "trusted", "ephemeral": True,
                             "machines": machines}})
    path = str(write(tmp_path, doc))
    r = cli("apply", path)
    assert r.returncode == 1, r.stdout + r.stderr
    err = next(x for x in r.stdout.splitlines()
               if x.startswith("error: create instance ite/ite-bad"))
    assert err.endswith("Invalid value: lots")  # Incus's own explanation of the cause
    assert "skipped: start instance ite/ite-bad" in r.stdout
    if no_vms:
        assert "! instance ite/ite-vm: cannot create a VM" in r.stdout
        assert "vhost-vsock" in r.stdout
    assert incus.get("/1.0/instances/ite-ok", project="ite")["status"] == "Running"
    wait_ip(incus, "ite", "ite-ok", "10.110.0.31")


def test_invalid_infra_mutates_nothing(incus, owned, tmp_path):
    owned.append("itest")
    doc = infra_doc({"itv": {"trust_level": "trusted", "machines": {
        "itv-1": {"ip": "10.110.0.41"}, "itv-2": {"ip": "10.999.0.1"}}}})
    r = cli("apply", str(write(tmp_path, doc)))
    assert r.returncode == 2 and "10.999.0.1" in r.stderr, r.stdout + r.stderr
    # The valid domain was not half-made either.
    assert not exists(incus, "/1.0/projects/itv")
    assert not exists(incus, "/1.0/networks/net-itv")
