"""The image's early isolation (anklume-firewall.service) against the real kernel, by traffic.

A router namespace with two domain bridges stand-ins (`net-ea`, `net-eb`, veth ends named like
Incus's bridges) and one host namespace behind each. The image's own script and default table
(image/extra/usr/lib/anklume/) run in the router: before any apply, the domains cannot reach
each other nor the router beyond DHCP/DNS/ping; the last applied table, when it loads, wins; a
last table that does not load falls back to the default. Nothing touches the host's firewall.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(c) for c in ("nft", "ip", "busybox")),
    reason="needs root, nft, ip and busybox (network namespaces)",
)

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "image" / "extra" / "usr" / "lib" / "anklume"
SCRIPT = LIB / "early-firewall"
DEFAULT = LIB / "firewall-default.nft"
# Addresses only inside the namespaces this test creates.
A_NET, B_NET, LAN_NET = "10.229.1", "10.229.2", "10.229.9"


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def in_ns(ns: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *argv, **kw)


@pytest.fixture
def topo():
    tag = f"{os.getpid() % 10000}{time.monotonic_ns() % 1000}"
    r, a, b = f"efr{tag}", f"efa{tag}", f"efb{tag}"
    for ns in (r, a, b):
        sh("ip", "netns", "add", ns)
    try:
        for ns, net, bridge in ((a, A_NET, "net-ea"), (b, B_NET, "net-eb")):
            sh("ip", "link", "add", bridge, "netns", r, "type", "veth", "peer", "eth0",
               "netns", ns)
            in_ns(r, "ip", "addr", "add", f"{net}.254/24", "dev", bridge)
            in_ns(r, "ip", "link", "set", bridge, "up")
            in_ns(ns, "ip", "addr", "add", f"{net}.1/24", "dev", "eth0")
            in_ns(ns, "ip", "link", "set", "eth0", "up")
            in_ns(ns, "ip", "link", "set", "lo", "up")
            in_ns(ns, "ip", "route", "add", "default", "via", f"{net}.254")
        in_ns(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield r, a, b
    finally:
        for ns in (r, a, b):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def lan(topo):
    """A namespace playing a neighbour on the LAN: linked to the router by a veth that is not a
    domain bridge, routing domain a's subnet through the router (any LAN host can)."""
    r, _, _ = topo
    ns = f"efl{os.getpid() % 10000}{time.monotonic_ns() % 1000}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", "lan0", "netns", r, "type", "veth", "peer", "eth0", "netns", ns)
        in_ns(r, "ip", "addr", "add", f"{LAN_NET}.254/24", "dev", "lan0")
        in_ns(r, "ip", "link", "set", "lan0", "up")
        in_ns(ns, "ip", "addr", "add", f"{LAN_NET}.1/24", "dev", "eth0")
        in_ns(ns, "ip", "link", "set", "eth0", "up")
        in_ns(ns, "ip", "link", "set", "lo", "up")
        in_ns(ns, "ip", "route", "add", f"{A_NET}.0/24", "via", f"{LAN_NET}.254")
        yield ns
    finally:
        sh("ip", "netns", "del", ns, check=False)


def ping(ns: str, ip: str) -> bool:
    return in_ns(ns, "busybox", "ping", "-c", "1", "-W", "2", ip, check=False).returncode == 0


def listening(ns: str, port: int) -> bool:
    """A TCP socket in LISTEN state on `port` in the namespace (/proc/net/tcp, tcp6)."""
    tables = in_ns(ns, "cat", "/proc/net/tcp", "/proc/net/tcp6", check=False).stdout
    return re.search(rf":{port:04X} [0-9A-F]+:0000 0A ", tables) is not None


def wait_listening(ns: str, port: int, srv: subprocess.Popen, timeout: float = 10) -> None:
    # Readiness by looking, not by sleeping: under load (a TCG guest beside) the listener may
    # take longer than any fixed pause to bind, and the control would fail (issue #18).
    deadline = time.monotonic() + timeout
    while not listening(ns, port):
        if srv.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"busybox nc in {ns} is not listening on {port} "
                                 f"(exit status {srv.poll()})")
        time.sleep(0.05)


def tcp(ns: str, listener_ns: str, ip: str, port: int) -> bool:
    """A real TCP connection from ns to ip:port, served by busybox nc in listener_ns."""
    srv = subprocess.Popen(["ip", "netns", "exec", listener_ns, "busybox", "nc", "-l", "-p",
                            str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        wait_listening(listener_ns, port, srv)
        subprocess.run(["ip", "netns", "exec", ns, "busybox", "nc", "-w", "2", ip,
                            str(port)], input="hello\n", capture_output=True, text=True,
                           timeout=10)
        try:
            out, _ = srv.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            return False
        return b"hello" in out
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def early(ns: str, last: Path, record: Path | None = None) -> subprocess.CompletedProcess:
    """The unit's script; `record`: the first-boot record (a machine with a data pool)."""
    record = record or last.with_name("no-firstboot.json")
    return in_ns(ns, "env", f"ANKLUME_FIREWALL_FILE={last}",
                 f"ANKLUME_FIREWALL_DEFAULT={DEFAULT}", f"ANKLUME_FIRSTBOOT_RECORD={record}",
                 "sh", str(SCRIPT), check=False)


def test_default_table_cuts_domains_off_each_other_and_the_host(topo, tmp_path):
    r, a, b = topo
    # Controls: without the table, everything passes (or the blocks below would prove nothing).
    assert ping(a, f"{B_NET}.1") and tcp(a, r, f"{A_NET}.254", 2201)

    proc = early(r, tmp_path / "none.nft")
    assert proc.returncode == 0, proc.stderr
    assert "the default table" in proc.stdout, proc.stdout
    assert not ping(a, f"{B_NET}.1"), "domain a reaches domain b"
    assert not ping(b, f"{A_NET}.1"), "domain b reaches domain a"
    assert ping(a, f"{A_NET}.254"), "a domain lost ping to its gateway"
    assert not tcp(a, r, f"{A_NET}.254", 2202), "a domain reaches a host service"
    assert not tcp(r, a, f"{A_NET}.1", 2203), "the host reaches into a domain"


# A "last applied" table that lets domains a and b talk: loaded, it shows that it replaced the
# default; refused, the domains stay cut.
CONNECTING_TABLE = ("table inet anklume {}\ndelete table inet anklume\n"
                    "table inet anklume {\n  chain forward {\n"
                    "    type filter hook forward priority filter - 1; policy accept;\n"
                    '    iifname "net-ea" oifname "net-eb" accept\n'
                    '    iifname "net-eb" oifname "net-ea" accept\n  }\n}\n')


def test_last_applied_table_wins_and_a_broken_one_falls_back(topo, tmp_path):
    r, a, _ = topo
    last = tmp_path / "firewall.nft"
    last.write_text(CONNECTING_TABLE)
    assert early(r, tmp_path / "none.nft").returncode == 0  # the default is loaded first
    assert not ping(a, f"{B_NET}.1")
    proc = early(r, last)
    assert proc.returncode == 0 and "the last applied table" in proc.stdout, proc.stdout
    assert ping(a, f"{B_NET}.1"), "the last applied table did not replace the default"

    last.write_text("table inet anklume { this is not nft }\n")
    proc = early(r, last)
    assert proc.returncode == 0, proc.stderr
    assert "does not load" in proc.stderr and "the default table" in proc.stdout
    assert not ping(a, f"{B_NET}.1"), "a broken last table left the domains connected"


def test_a_machine_with_a_pool_ignores_a_table_on_the_plain_partition(topo, tmp_path):
    """Its last table is in the pool's vault (loaded once the pool is unlocked): one on the
    unencrypted partition was planted, so the default table loads and says why."""
    r, a, _ = topo
    last = tmp_path / "firewall.nft"
    last.write_text(CONNECTING_TABLE)
    record = tmp_path / "firstboot.json"
    record.write_text("{}")
    proc = early(r, last, record)
    assert proc.returncode == 0, proc.stderr
    assert f"{last} ignored" in proc.stderr and "the default table" in proc.stdout, proc
    assert not ping(a, f"{B_NET}.1"), "the planted table connected the domains"


def test_default_table_keeps_the_lan_out_of_the_domains(topo, lan, tmp_path):
    """Issue #20: a LAN host routing a domain's subnet through the appliance opens nothing in
    it before the agent's first apply; the domain's own connections out still work."""
    r, a, _ = topo
    # Control: without the table the router forwards the LAN host in.
    assert tcp(lan, a, f"{A_NET}.1", 2211), "control: the LAN host should reach domain a"
    assert early(r, tmp_path / "none.nft").returncode == 0
    assert not tcp(lan, a, f"{A_NET}.1", 2212), "a LAN host reaches into a domain"
    assert not ping(lan, f"{A_NET}.1"), "a LAN host pings into a domain"
    assert tcp(a, lan, f"{LAN_NET}.1", 2213), "a domain lost its way out to the LAN"


def test_a_table_that_cannot_load_fails_the_unit_so_incus_does_not_start(topo, tmp_path):
    """Issue #20: Incus requires anklume-firewall.service (image/extra/.../incus*.d/): the
    unit must fail, not report success, when no table at all could be loaded."""
    r, _, _ = topo
    proc = in_ns(r, "env", f"ANKLUME_FIREWALL_FILE={tmp_path / 'none.nft'}",
                 f"ANKLUME_FIREWALL_DEFAULT={tmp_path / 'missing.nft'}", "sh", str(SCRIPT),
                 check=False)
    assert proc.returncode != 0, proc.stdout
    assert "could not be loaded" in proc.stderr and "Incus will not start" in proc.stderr
    assert in_ns(r, "nft", "list", "table", "inet", "anklume", check=False).returncode != 0
    for unit in ("incus.service", "incus.socket", "incus-startup.service"):
        conf = (REPO / "image/extra/usr/lib/systemd/system" / f"{unit}.d"
                / "anklume-firewall.conf").read_text()
        assert "Requires=anklume-firewall.service" in conf and \
            "After=anklume-firewall.service" in conf, unit
