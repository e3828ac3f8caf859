"""Isolation between domains, proven with real traffic between busybox containers.

Two domains (`isoa` in 10.200.77.0/24, `isob` in 10.210.77.0/24: zone_base 200, away from the
other Incus tests on the same daemon), two containers in the first, one in the second. Probes
run inside the containers (busybox `nc`, `ping`, `udhcpc`, `nslookup`) and only ever target the
containers created here, their gateways and a LAN namespace made here. Every probe has a
bounded timeout; a blocked TCP connect costs 2 s.

The Incus side is made by the agent (`anklume apply`) when that command exists, otherwise by
plain `incus` calls; the nftables side is always planned and applied through agent.nftables.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from serving import answering

from anklume.agent import nft_live, nftables
from anklume.agent.model import Infra
from anklume.agent.validate import load as load_infra
from anklume.run import run

# A missing daemon or image fails the test (conftest.py): a skipped proof would look green.
pytestmark = pytest.mark.incus

IMAGE = "anklume/busybox"
A, A2, B = "a1", "a2", "b1"  # a2: a1's neighbour in the same domain
IPS = {A: "10.200.77.1", A2: "10.200.77.2", B: "10.210.77.1"}
GWS = {A: "10.200.77.254", A2: "10.200.77.254", B: "10.210.77.254"}
PROJECTS = {A: "isoa", A2: "isoa", B: "isob"}
HOST_PORT = 18090  # a listener on the host, bound to isoa's gateway address only
LAN_NET = "10.229.77"  # the LAN namespace's link to the host (made and removed here)
LAN_PORT = 18091  # a listener in the LAN namespace
EXEC_TIMEOUT = 20
FIREWALL_LOCK = "/run/lock/anklume-host-firewall.lock"
PROBE_TRIES = 6


def infra_doc(policies: list[dict]) -> dict:
    return {
        "project_name": "isotest",
        "global": {"addressing": {"zone_base": 200}, "default_os_image": IMAGE},
        "domains": {
            # ephemeral: no delete protection, so teardown can always remove them.
            "isoa": {"trust_level": "admin", "subnet_id": 77, "ephemeral": True,
                     "machines": {A: {"ip": IPS[A]}, A2: {"ip": IPS[A2]}}},
            "isob": {"trust_level": "trusted", "subnet_id": 77, "ephemeral": True,
                     "machines": {B: {"ip": IPS[B]}}},
        },
        "network_policies": policies,
    }


def _incus(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return run(["incus", *args], check=check, timeout=timeout, input="")


def _agent_cli() -> list[str] | None:
    """`anklume` if it has an `apply` command (written in parallel), else None."""
    exe = Path(sys.executable).parent / "anklume"
    if os.environ.get("ANKLUME_ISOTEST_INCUS") == "cli" or not exe.exists():
        return None
    proc = subprocess.run([str(exe), "apply", "--help"], capture_output=True, timeout=30)
    return [str(exe)] if proc.returncode == 0 else None


def _create_with_cli(infra: Infra) -> None:
    # Mirrors the mapping in notes/infra-yml.md; only used until `anklume apply` exists.
    for d in infra.enabled_domains:
        net = d.subnet.network_address
        if _incus("network", "show", d.bridge, check=False).returncode != 0:
            _incus("network", "create", d.bridge, "--type", "bridge",
                   f"ipv4.address={d.gateway}/{d.subnet.prefixlen}", "ipv4.nat=true",
                   "ipv6.address=none", f"ipv4.dhcp.ranges={net + 100}-{net + 199}")
        if _incus("project", "show", d.name, check=False).returncode != 0:
            _incus("project", "create", d.name, "-c", "features.images=false",
                   "-c", "features.profiles=true")
            _incus("profile", "device", "add", "default", "root", "disk", "path=/",
                   "pool=default", "--project", d.name)
            _incus("profile", "device", "add", "default", "eth0", "nic",
                   f"network={d.bridge}", "name=eth0", "--project", d.name)
        for m in d.machines:
            if _incus("info", m.name, "--project", d.name, check=False).returncode != 0:
                _incus("init", IMAGE, m.name, "--project", d.name)
                _incus("config", "device", "override", m.name, "eth0",
                       f"ipv4.address={m.ip}", "--project", d.name)
            _incus("start", m.name, "--project", d.name, check=False)


def _teardown() -> None:
    for m, project in PROJECTS.items():
        _incus("config", "unset", m, "security.protection.delete", "--project", project,
               check=False)
        _incus("delete", "--force", m, "--project", project, check=False)
    for project in sorted(set(PROJECTS.values())):
        _incus("project", "delete", project, check=False)
        _incus("network", "delete", f"net-{project}", check=False)
    nftables.remove()
    # Incus drops its per-bridge chains with the bridge; a crash in between can leave them in
    # `inet incus`. Remove only chains of our bridges: the table is shared with other tests.
    listing = run(["nft", "list", "table", "inet", "incus"], check=False).stdout or ""
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "chain" and parts[1].endswith(
                tuple(f".net-{p}" for p in PROJECTS.values())):
            run(["nft", "delete", "chain", "inet", "incus", parts[1]], check=False)


class Lab:
    def __init__(self, workdir: Path) -> None:
        self.path = workdir / "infra.yml"
        self.agent = _agent_cli()
        self.started = False
        self.infra: Infra | None = None
        self.table_expected = True  # False while the control runs without our table
        self.interference = 0  # times another anklume run replaced the table under us

    def configure(self, policies: list[dict]) -> nftables.NftChange:
        """Write infra.yml with these policies and reconcile; returns the nftables change."""
        self.path.write_text(yaml.safe_dump(infra_doc(policies), sort_keys=False))
        infra = load_infra(self.path)
        change = nftables.plan(infra)  # what the reconcile below has to change
        if self.agent:
            # The agent puts the firewall in place before any instance starts.
            run([*self.agent, "apply", "--default-image", IMAGE, str(self.path)], timeout=180)
        else:
            # Firewall first here too: containers then getting their addresses proves DHCP
            # passes our input/output chains.
            nftables.apply(change)
            if not self.started:
                _create_with_cli(infra)
        self.infra = infra
        self._ensure_table()
        if not self.started:
            for m in IPS:
                self._wait_for_address(m)
            self._start_listeners()
            self.started = True
        return change

    def _wait_for_address(self, m: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = self.exec(m, "ip", "-4", "addr", "show", "eth0", check=False).stdout
            if f"inet {IPS[m]}/" in out:
                return
            self._ensure_table()
            time.sleep(0.5)
        pytest.fail(f"{m} did not get {IPS[m]} by DHCP within 60 s")

    def _start_listeners(self) -> None:
        # `nc -ll -e` keeps serving; each answer names the listener so a reply cannot come
        # from somewhere else.
        for m, port in ((B, 8080), (B, 8081), (A, 8080)):
            self.exec(m, "sh", "-c", f"nc -ll -p {port} -e echo open-{m}-{port} "
                      "</dev/null >/dev/null 2>&1 &")
        # Readiness by looking (a LISTEN socket in /proc/net/tcp), not by hoping it bound.
        for m, port in ((B, 8080), (B, 8081), (A, 8080)):
            deadline = time.monotonic() + 30
            while self.exec(m, "grep", "-sqE", f":{port:04X} [0-9A-F]+:0000 0A ",
                            "/proc/net/tcp", "/proc/net/tcp6", check=False).returncode != 0:
                if time.monotonic() > deadline:
                    pytest.fail(f"nc in {m} is not listening on {port} after 30 s")
                time.sleep(0.2)

    def exec(self, m: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return _incus("exec", m, "--project", PROJECTS[m], "--", *argv, check=check,
                      timeout=EXEC_TIMEOUT)

    # The host has one `inet anklume` table, and another anklume run on this machine (a test
    # suite, the benchmark) may replace it at any time. A probe only counts when our table was
    # in place before and after it; otherwise ours goes back in and the probe is repeated.
    def _table_is_ours(self) -> bool:
        if not self.table_expected:
            return nft_live.read_table() is None
        assert self.infra is not None
        return nftables.plan(self.infra).empty

    def _ensure_table(self) -> None:
        if self._table_is_ours():
            return
        self.interference += 1
        if self.table_expected:
            assert self.infra is not None
            nftables.apply(nftables.plan(self.infra))
        else:
            nftables.remove()

    def checked(self, probe: Callable[[], bool]) -> bool:
        for _ in range(PROBE_TRIES):
            self._ensure_table()
            result = probe()
            if self._table_is_ours():
                return result
        pytest.fail(f"another anklume run replaced the host's inet anklume table during "
                    f"{PROBE_TRIES} tries of one probe: run this test alone "
                    f"(or have that run hold {FIREWALL_LOCK})", pytrace=False)

    def tcp(self, src: str, dst: str, port: int) -> bool:
        def probe() -> bool:
            proc = self.exec(src, "nc", "-w", "2", IPS[dst], str(port), check=False)
            return f"open-{dst}-{port}" in proc.stdout
        return self.checked(probe)

    def ping(self, src: str, ip: str) -> bool:
        return self.checked(lambda: self.exec(src, "ping", "-c", "1", "-W", "2", ip,
                                              check=False).returncode == 0)


@contextlib.contextmanager
def host_firewall_lock(timeout: float = 300) -> Iterator[None]:
    """Serialize suites that change the host's one `inet anklume` table: a second run beside
    this one (another checkout, another engineer) would replace or delete it mid-proof."""
    fd = os.open(FIREWALL_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{FIREWALL_LOCK} held for over {timeout:.0f} s", pytrace=False)
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)  # releases the lock


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    if _incus("image", "info", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} missing (scripts/start-incus imports it)", pytrace=False)
    with host_firewall_lock():
        _teardown()  # leftovers of an interrupted run
        lab = Lab(tmp_path_factory.mktemp("isolation"))
        try:
            lab.configure([])
            yield lab
        finally:
            if lab.interference:
                print(f"isolation: our table was replaced {lab.interference} times by another "
                      "anklume run; the affected probes were repeated")
            _teardown()


@contextlib.contextmanager
def host_listener(ip: str, port: int) -> Iterator[None]:
    """A TCP server on the host that answers `open-host`, bound to one gateway address."""
    with answering(socket.create_server((ip, port)), b"open-host\n"):
        yield


def _host_connects(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=2) as s:
            s.settimeout(2)
            return s.recv(64).startswith(b"open-")
    except OSError:  # dropped by the output chain: EPERM at once, or a timeout
        return False


def pol(src: str, dst: str, ports: list[int] | None, **kw: object) -> dict:
    d = {"description": f"{src} to {dst}", "from": src, "to": dst, **kw}
    if ports is not None:
        d["ports"] = ports
    return d


def test_control_without_the_table_domains_reach_each_other(lab):
    # The failing control: Incus alone routes between bridges, so every "blocked" below is
    # our table's doing.
    nftables.remove()
    lab.table_expected = False
    try:
        assert lab.tcp(A, B, 8080)
        assert lab.ping(A, IPS[B])
    finally:
        lab.table_expected = True
        lab.configure([])
    assert not lab.tcp(A, B, 8080)


def test_domains_isolated_without_policy(lab):
    lab.configure([])
    assert not lab.tcp(A, B, 8080)
    assert not lab.tcp(B, A, 8080)
    assert not lab.ping(A, IPS[B])
    assert not lab.ping(B, IPS[A])
    # Each reaches its own gateway, not the other domain's (that is the host, too).
    assert lab.ping(A, GWS[A])
    assert lab.ping(B, GWS[B])
    assert not lab.ping(A, GWS[B])
    assert not lab.ping(B, GWS[A])


def test_dhcp_and_dns_to_own_gateway_pass(lab):
    lab.configure([])
    for m in (A, B):
        # A fresh DISCOVER (from 0.0.0.0, broadcast) and its offer must both get through;
        # `-s /bin/true` leaves the interface as it is.
        assert lab.checked(lambda m=m: f"lease of {IPS[m]} obtained" in lab.exec(
            m, "udhcpc", "-n", "-q", "-i", "eth0", "-s", "/bin/true", "-t", "3", "-T", "1",
            "-A", "1", check=False).stderr), f"{m}: no DHCP lease through the firewall"
        assert lab.checked(lambda m=m: IPS[m] in lab.exec(
            m, "timeout", "5", "nslookup", m, GWS[m], check=False).stdout), \
            f"{m}: no DNS answer from its gateway"


def test_policy_opens_exactly_declared_port_and_direction(lab):
    change = lab.configure([pol(A, B, [8080])])
    assert [ln for ln in change.added if "policy" in ln] == [
        'forward: iifname "net-isoa" oifname "net-isob" ip saddr 10.200.77.1 '
        'ip daddr 10.210.77.1 tcp dport 8080 accept comment "policy: a1 to b1"']
    assert lab.tcp(A, B, 8080)
    assert not lab.tcp(A, B, 8081)  # listening, but not declared
    assert not lab.tcp(B, A, 8080)  # the reverse stays closed
    assert not lab.ping(A, IPS[B])  # a port policy is not "all traffic"


def test_bidirectional_opens_the_reverse(lab):
    lab.configure([pol(A, B, [8080], bidirectional=True)])
    assert lab.tcp(A, B, 8080)
    assert lab.tcp(B, A, 8080)
    assert not lab.tcp(A, B, 8081)


def test_domain_policy_with_all_ports(lab):
    lab.configure([pol("isoa", "isob", None)])
    assert lab.tcp(A, B, 8080)
    assert lab.tcp(A, B, 8081)
    assert lab.ping(A, IPS[B])
    assert not lab.tcp(B, A, 8080)


def test_removing_the_policy_closes_it_again(lab):
    lab.configure([pol(A, B, [8080])])
    assert lab.tcp(A, B, 8080)
    change = lab.configure([])
    assert change.added == ()
    assert [ln for ln in change.removed if "policy" in ln] == [
        'forward: iifname "net-isoa" oifname "net-isob" ip saddr 10.200.77.1 '
        'ip daddr 10.210.77.1 tcp dport 8080 accept comment "policy: a1 to b1"']
    assert not lab.tcp(A, B, 8080)


def test_host_policies(lab):
    with host_listener(GWS[A], HOST_PORT):
        lab.configure([])
        assert not _container_reaches_host(lab)
        assert not lab.checked(lambda: _host_connects(IPS[A], 8080))
        lab.configure([pol(A, "host", [HOST_PORT]), pol("host", A, [8080])])
        assert _container_reaches_host(lab)
        assert lab.checked(lambda: _host_connects(IPS[A], 8080))
        assert not lab.checked(lambda: _host_connects(IPS[B], 8080))
        lab.configure([])
        assert not _container_reaches_host(lab)
        assert not lab.checked(lambda: _host_connects(IPS[A], 8080))


def _container_reaches_host(lab: Lab) -> bool:
    return lab.checked(lambda: "open-host" in lab.exec(A, "nc", "-w", "2", GWS[A],
                                                       str(HOST_PORT), check=False).stdout)


@contextlib.contextmanager
def lan_host() -> Iterator[Callable[[str, int], bool]]:
    """A network namespace playing a neighbour on the appliance's LAN, linked to the host by a
    veth (not a net-* bridge) and routing both domains' subnets through the host: what any
    machine on the LAN can do. Yields a TCP probe from it; everything is removed after."""
    tag = os.getpid() % 100000
    ns, veth = f"anklan{tag}", f"anklan{tag}h"
    srv: subprocess.Popen[bytes] | None = None
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "link", "add", veth, "type", "veth", "peer", "eth0", "netns", ns])
        run(["ip", "addr", "add", f"{LAN_NET}.254/24", "dev", veth])
        run(["ip", "link", "set", veth, "up"])
        for argv in (["ip", "addr", "add", f"{LAN_NET}.1/24", "dev", "eth0"],
                     ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"],
                     ["ip", "route", "add", "10.200.77.0/24", "via", f"{LAN_NET}.254"],
                     ["ip", "route", "add", "10.210.77.0/24", "via", f"{LAN_NET}.254"]):
            run(["ip", "netns", "exec", ns, *argv])

        # A service on the LAN host, for the domain's way out.
        srv = subprocess.Popen(["ip", "netns", "exec", ns, "busybox", "nc", "-ll", "-p",
                                str(LAN_PORT), "-e", "echo", "open-lan"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while run(["ip", "netns", "exec", ns, "grep", "-sqE",
                   f":{LAN_PORT:04X} [0-9A-F]+:0000 0A ", "/proc/net/tcp", "/proc/net/tcp6"],
                  check=False).returncode != 0:
            if srv.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nc in {ns} is not listening on {LAN_PORT}")
            time.sleep(0.1)

        def connects(ip: str, port: int) -> bool:
            proc = run(["ip", "netns", "exec", ns, "busybox", "nc", "-w", "2", ip, str(port)],
                       check=False, timeout=10)
            return "open-" in proc.stdout

        yield connects
    finally:
        if srv is not None:
            srv.kill()
            srv.wait()
        run(["ip", "link", "del", veth], check=False)
        run(["ip", "netns", "del", ns], check=False)


def test_a_lan_host_routing_through_the_appliance_cannot_reach_into_a_domain(lab):
    """Issue #20: a neighbour that routes a domain's subnet through this machine. Incus
    forwards and only masquerades outbound, so without our table it reaches every container
    port (the control); with it nothing new enters a domain from outside, while the domain's
    own connections out to the LAN still work."""
    with lan_host() as lan_connects:
        nftables.remove()
        lab.table_expected = False
        try:
            assert lab.checked(lambda: lan_connects(IPS[A], 8080)), \
                "control: without the table the LAN host should reach the container"
        finally:
            lab.table_expected = True
            lab.configure([])
        assert not lab.checked(lambda: lan_connects(IPS[A], 8080))
        assert not lab.checked(lambda: lan_connects(IPS[B], 8081))
        # The domain's own connection out to the LAN, and its replies, still pass.
        assert lab.checked(lambda: "open-lan" in lab.exec(
            A, "nc", "-w", "2", f"{LAN_NET}.1", str(LAN_PORT), check=False).stdout)
        # A policy between domains opens nothing to the LAN.
        lab.configure([pol(A, B, [8080])])
        assert lab.tcp(A, B, 8080)
        assert not lab.checked(lambda: lan_connects(IPS[B], 8080))
        lab.configure([])


def test_a_from_lan_policy_opens_exactly_its_port_of_its_machine(lab):
    """Issue #20: the declared way to expose a port to the LAN (`from: lan`, docs/infra-yml.md)
    opens that port of that machine to a neighbour, and nothing else: not the machine's other
    listening port, not the same port in another domain, nothing between domains."""
    with lan_host() as lan_connects:
        lab.configure([pol("lan", B, [8080])])
        assert lab.checked(lambda: lan_connects(IPS[B], 8080))
        assert not lab.checked(lambda: lan_connects(IPS[B], 8081))
        assert not lab.checked(lambda: lan_connects(IPS[A], 8080))
        assert not lab.tcp(A, B, 8080)
        lab.configure([])
        assert not lab.checked(lambda: lan_connects(IPS[B], 8080))


def _as_a1(lab: Lab) -> str:
    """From a2, with a1's address as its own (root in a container can): a TCP connection to
    b1:8080, which a policy grants to a1 only. a2's own address comes back after."""
    own, stolen, gw = IPS[A2], IPS[A], GWS[A2]
    script = (f"ip addr flush dev eth0; ip addr add {stolen}/24 dev eth0; "
              f"ip route add default via {gw}; out=$(nc -w 2 {IPS[B]} 8080); "
              f"ip addr flush dev eth0; ip addr add {own}/24 dev eth0; "
              f"ip route add default via {gw}; echo \"$out\"")
    return lab.exec(A2, "sh", "-c", script, check=False).stdout


def test_a_machine_cannot_take_its_neighbours_address_and_grants(lab):
    """Issue #20: policies match a machine by its static IP (and bridge); a neighbour in the
    same domain taking that IP must not inherit its grants. The agent sets Incus's NIC
    filtering on every machine (its bridge port drops ARP and IPv4 from any other address)."""
    lab.configure([pol(A, B, [8080])])
    assert lab.tcp(A, B, 8080)
    assert not lab.tcp(A2, B, 8080)
    project = PROJECTS[A2]
    mac = _incus("config", "get", A2, "volatile.eth0.hwaddr", "--project", project).stdout.strip()
    # The host's next hop for a1's address is a2, as if a2 had won the ARP race: only the
    # bridge port's filter is left between a2 and a1's grant.
    run(["ip", "neigh", "replace", IPS[A], "lladdr", mac, "dev", "net-isoa", "nud", "permanent"])
    try:
        assert not lab.checked(lambda: "open-b1-8080" in _as_a1(lab)), \
            "a2 used a1's grant with a1's address"
        # Control: the same with the filter off on a2's port succeeds (so the above can fail).
        _incus("config", "device", "set", A2, "eth0", "security.ipv4_filtering=false",
               "security.mac_filtering=false", "--project", project)
        assert lab.checked(lambda: "open-b1-8080" in _as_a1(lab)), \
            "control: without the NIC filter a2 should pass as a1"
    finally:
        run(["ip", "neigh", "del", IPS[A], "dev", "net-isoa"], check=False)
        lab.configure([])  # the agent puts the filter back (drift)
    dev = _incus("config", "device", "get", A2, "eth0", "security.ipv4_filtering",
                 "--project", project).stdout.strip()
    assert dev == "true", dev
