"""services: a grant is a proxy device that lets a consumer in another domain reach exactly one
port of the provider, proven with real traffic between busybox containers.

Provider p1 (domain svcp, 10.62.7.0/24) and consumer c1 (domain svcc, 10.72.7.0/24): zone_base 62,
away from every other Incus test on this daemon. Probes run inside c1 and target only p1 and c1's
own loopback. The whole lab is removed at the end (and before, for an interrupted run).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from anklume.agent.model import GlobalSettings, Infra
from anklume.agent.plan_text import format_plan
from anklume.agent.reconcile import reconcile
from anklume.agent.validate import load
from anklume.run import run

pytestmark = pytest.mark.incus

IMAGE = "anklume/busybox"
PROJECT = "svctest"
P_IP, C_IP = "10.62.7.1", "10.72.7.1"
FIREWALL_LOCK = "/run/lock/anklume-host-firewall.lock"  # as test_isolation.py
DEVICE = "svc-p1-signer"


def infra_doc(grant: bool) -> dict:
    services = {"signer": {"port": 7000, "consumers": ["svcc"]}} if grant else {}
    return {
        "project_name": PROJECT,
        "global": {"addressing": {"zone_base": 62}, "default_os_image": IMAGE},
        "domains": {
            "svcp": {"trust_level": "admin", "subnet_id": 7, "ephemeral": True,
                     "machines": {"p1": {"ip": P_IP, "services": services}}},
            "svcc": {"trust_level": "trusted", "subnet_id": 7, "ephemeral": True,
                     "machines": {"c1": {"ip": C_IP}}},
        },
    }


def _exec(project: str, m: str, *argv: str) -> subprocess.CompletedProcess:
    return run(["incus", "exec", m, "--project", project, "--", *argv], check=False,
               timeout=20, input="")


def _tear_down() -> None:
    report = reconcile(Infra(PROJECT, GlobalSettings(), ()), prune=True, force=True)
    assert report.ok, [o.error for o in report.result.failed]


@contextlib.contextmanager
def _firewall_lock() -> Iterator[None]:
    # The host has one `inet anklume` table: no other suite may replace it mid-proof.
    fd = os.open(FIREWALL_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _apply(path: Path, grant: bool):
    path.write_text(yaml.safe_dump(infra_doc(grant), sort_keys=False))
    infra = load(path)
    planned = reconcile(infra, dry_run=True, default_image=IMAGE)
    report = reconcile(infra, default_image=IMAGE)
    assert report.ok, (format_plan(report.plan), report.result and
                       [o.error for o in report.result.failed])
    return planned


def _wait_ready() -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = [_exec(p, m, "ip", "-4", "addr", "show", "eth0").stdout
               for p, m in (("svcp", "p1"), ("svcc", "c1"))]
        if f"inet {P_IP}/" in got[0] and f"inet {C_IP}/" in got[1]:
            return
        time.sleep(0.5)
    pytest.fail(f"p1/c1 did not get {P_IP}/{C_IP} by DHCP within 60 s")


def _reply(host: str, port: int) -> str:
    # stdin stays open a moment: busybox nc quits at its EOF, before a proxied reply arrives.
    return _exec("svcc", "c1", "sh", "-c", f"sleep 1 | nc -w 2 {host} {port}").stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Path]:
    with _firewall_lock():
        _tear_down()
        path = tmp_path_factory.mktemp("services") / "infra.yml"
        try:
            _apply(path, grant=True)
            _wait_ready()
            for port in (7000, 7001):
                _exec("svcp", "p1", "sh", "-c", f"nc -ll -p {port} -e echo open-{port} "
                      "</dev/null >/dev/null 2>&1 &")
            yield path
        finally:
            _tear_down()


def test_consumer_reaches_the_service_through_the_proxy_only(lab):
    assert "open-7000" in _reply("127.0.0.1", 7000)  # the proxy on c1's loopback
    assert "open-7001" not in _reply(P_IP, 7001)  # the provider's other port: isolated
    assert "open-7000" not in _reply(P_IP, 7000)  # and no route to the service itself
    # Idempotent: the second run plans nothing, devices and firewall included.
    again = reconcile(load(lab), dry_run=True, default_image=IMAGE)
    assert list(again.plan) == [], format_plan(again.plan)


def test_removing_the_grant_removes_the_proxy(lab):
    planned = _apply(lab, grant=False)
    text = format_plan(planned.plan)
    assert "~ instance svcc/c1" in text.splitlines(), text
    assert any(ln.strip().startswith(f"devices.{DEVICE}: ") and ln.endswith("-> (none)")
               for ln in text.splitlines()), text
    assert "service: p1/signer" in text  # its firewall rule goes too
    got = run(["incus", "config", "device", "list", "c1", "--project", "svcc"],
              check=False, timeout=20).stdout.split()
    assert DEVICE not in got
    assert "open-7000" not in _reply("127.0.0.1", 7000)
    again = reconcile(load(lab), dry_run=True, default_image=IMAGE)
    assert list(again.plan) == [], format_plan(again.plan)
