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
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from serving import answering

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
# A unix-socket service: at the top of each root file system (no mount hides it from the host,
# where the test plays the provider's server and the consumer's client through those paths).
P_SOCK, C_SOCK = "/clip-p.sock", "/clip-c.sock"


def infra_doc(grant: bool) -> dict:
    services = {"signer": {"port": 7000, "consumers": ["svcc"]},
                "clip": {"socket": P_SOCK, "listen": C_SOCK, "consumers": ["c1"]}} if grant else {}
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


def _rootfs(project: str, name: str) -> Path:
    return Path(f"/var/lib/incus/containers/{project}_{name}/rootfs")


@contextlib.contextmanager
def _unix_server(path: Path, reply: bytes) -> Iterator[None]:
    """The provider's service: a server whose socket file is `path` (in p1's root file system,
    bound from the host: busybox has no unix-socket server)."""
    path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    # The provider's proxy connects as the container's root (a mapped uid on the host), as a
    # service in the container would have made it: anyone may connect here.
    path.chmod(0o666)
    srv.listen()
    try:
        with answering(srv, reply, read_request=True):  # the request crosses two proxies
            yield
    finally:
        path.unlink(missing_ok=True)


def _ask(path: Path, data: bytes) -> bytes:
    """Connect at `path` (a socket in a container's root file system, seen from the host),
    send `data`, return what comes back until the other end closes (or 5 s)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(5)
        try:
            c.connect(str(path))
            c.sendall(data)
            out = b""
            while chunk := c.recv(4096):
                out += chunk
            return out
        except OSError:
            return b""


def test_a_unix_socket_service_reaches_the_provider_socket_and_nothing_else(lab):
    """#20: the provider controls the path of its socket. Its proxy connects inside the
    provider, so a symlink there to the Incus API socket leads nowhere; resolved on the host
    (the control: what a proxy connecting through the provider's root file system did), the
    same symlink hands out the Incus API."""
    provider, consumer = _rootfs("svcp", "p1") / P_SOCK[1:], _rootfs("svcc", "c1") / C_SOCK[1:]
    with _unix_server(provider, b"open-clip\n"):
        assert _ask(consumer, b"hi\n") == b"open-clip\n"
    assert _exec("svcp", "p1", "ln", "-sf", "/var/lib/incus/unix.socket", P_SOCK).returncode == 0
    request = b"GET /1.0 HTTP/1.0\r\n\r\n"
    assert b" 200 " in _ask(provider, request), "control: the symlink should reach the API"
    assert b"HTTP" not in _ask(consumer, request), "the grant handed out the Incus API"


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
