"""The `inet anklume` table against the real kernel, inside a private network namespace.

Each test gets its own namespace (its own, empty nftables ruleset), so nothing here touches the
host's firewall, Incus's table or other tests running on the same machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from anklume.agent import nft_live, nftables
from anklume.agent.model import (
    Domain,
    Endpoint,
    GlobalSettings,
    Infra,
    Machine,
    NetworkPolicy,
)
from anklume.errors import CommandError

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="needs root, nft and ip (network namespaces)",
)

IP = ipaddress.IPv4Address


def _domain(name: str, third: int, *machines: tuple[str, int], enabled: bool = True) -> Domain:
    net = ipaddress.IPv4Network(f"10.220.{third}.0/24")
    return Domain(name=name, subnet=net, seq=third, enabled=enabled, machines=tuple(
        Machine(name=m, domain=name, ip=net.network_address + host) for m, host in machines))


A = _domain("nfta", 1, ("a1", 1))
B = _domain("nftb", 2, ("b1", 1))
C = _domain("nftc", 3)
WEB = NetworkPolicy("a1 to b1 web", Endpoint("machine", "a1", "nfta", IP("10.220.1.1")),
                    Endpoint("machine", "b1", "nftb", IP("10.220.2.1")), (80,))


def _infra(*domains: Domain, policies: tuple[NetworkPolicy, ...] = ()) -> Infra:
    return Infra(project_name="nfttest", settings=GlobalSettings(zone_base=200),
                 domains=domains, policies=policies)


@pytest.fixture
def netns(monkeypatch):
    name = f"ank-nft-{os.getpid()}-{time.monotonic_ns() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    monkeypatch.setattr(nft_live, "NFT_ARGV", ("ip", "netns", "exec", name, "nft"))
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def _nft(ns: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=input, text=True,
                          capture_output=True, timeout=30)


def _live_lines(ns: str) -> list[str]:
    proc = _nft(ns, "-j", "list", "table", "inet", "anklume")
    assert proc.returncode == 0, proc.stderr
    return _texts(nft_live.parse(json.loads(proc.stdout)))


def _texts(fw) -> list[str]:
    return [t for _, t in fw.lines()]


def test_apply_then_listing_matches_and_replan_is_empty(netns):
    inf = _infra(A, B, policies=(WEB,))
    change = nftables.plan(inf)
    assert not change.empty and not change.removed
    nftables.apply(change)
    assert _live_lines(netns) == _texts(nftables.desired(inf))
    assert nftables.plan(inf).empty
    # Counters moving does not count as a change.
    listing = _nft(netns, "list", "table", "inet", "anklume").stdout
    assert 'counter packets 0 bytes 0 drop comment "anklume: isolation between domains"' \
        in listing


def test_change_is_exactly_the_diff(netns):
    nftables.apply(nftables.plan(_infra(A, B, C)))
    new = _infra(A, B, policies=(WEB,))  # C gone, one policy added
    change = nftables.plan(new)
    assert change.added == (
        'forward: iifname "net-nfta" oifname "net-nftb" ip saddr 10.220.1.1 ip daddr 10.220.2.1 '
        'tcp dport 80 accept comment "policy: a1 to b1 web"',
    )
    assert {ln.split(": ", 1)[0] for ln in change.removed} == {"forward", "input", "output"}
    assert all("net-nftc" in ln for ln in change.removed)
    assert len(change.removed) == 1 + 4 + 1  # same bridge; DHCP, DNS x2, ping; DHCP replies
    nftables.apply(change)
    assert _live_lines(netns) == _texts(nftables.desired(new))
    assert nftables.plan(new).empty


def test_foreign_edit_is_reverted(netns):
    inf = _infra(A, B)
    nftables.apply(nftables.plan(inf))
    proc = _nft(netns, "add", "rule", "inet", "anklume", "forward", "iifname", '"net-nftb"',
                "accept")
    assert proc.returncode == 0, proc.stderr
    change = nftables.plan(inf)
    assert change.added == ()
    assert change.removed == ('forward: iifname "net-nftb" accept',)
    nftables.apply(change)
    assert nftables.plan(inf).empty


def test_failed_script_leaves_old_table_intact(netns):
    old = _infra(A, B)
    nftables.apply(nftables.plan(old))
    before = _live_lines(netns)
    new_script = nftables.render(_infra(A, B, C, policies=(WEB,)))
    # A syntax error at the very end: nft parses the whole file before sending anything.
    with pytest.raises(CommandError):
        nft_live.load(new_script + "this is not nft\n")
    assert _live_lines(netns) == before
    # An error only the kernel sees, after the batch already deleted and rebuilt the table:
    # the second delete fails, the whole transaction is aborted, the old table stays.
    with pytest.raises(CommandError):
        nft_live.load(new_script + "delete table inet anklume\ndelete table inet anklume\n")
    assert _live_lines(netns) == before


def test_table_never_absent_while_replaced(netns):
    one, two = _infra(A, B), _infra(A, B, C, policies=(WEB,))
    nftables.apply(nftables.plan(one))
    stop = threading.Event()
    misses: list[str] = []
    reads = 0

    def watch() -> None:
        nonlocal reads
        while not stop.is_set():
            proc = _nft(netns, "list", "table", "inet", "anklume")
            reads += 1
            if proc.returncode != 0 or "isolation between domains" not in proc.stdout:
                misses.append(proc.stderr or proc.stdout)

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(20):
            nftables.apply(nftables.plan(two if i % 2 == 0 else one))
    finally:
        stop.set()
        t.join(timeout=30)
    print(f"{reads} listings during 20 replacements")
    assert reads > 0
    assert misses == []


def test_remove_deletes_the_table_and_is_idempotent(netns):
    nftables.apply(nftables.plan(_infra(A, B)))
    nftables.remove()
    assert "No such file" in _nft(netns, "list", "table", "inet", "anklume").stderr
    nftables.remove()  # already gone: still fine
    assert nftables.plan(_infra()).empty


def test_no_enabled_domain_plans_the_removal(netns):
    nftables.apply(nftables.plan(_infra(A)))
    change = nftables.plan(_infra(_domain("nfta", 1, enabled=False)))
    assert change.added == () and change.removed
    nftables.apply(change)
    assert "No such file" in _nft(netns, "list", "table", "inet", "anklume").stderr
    assert nftables.plan(_infra(_domain("nfta", 1, enabled=False))).empty


def test_other_tables_are_left_alone(netns):
    # Stands for Incus's own `inet incus` table: replacing ours must not touch it.
    incus = ("table inet incus {\n\tchain forward {\n"
             "\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n")
    proc = _nft(netns, "-f", "-", input=incus)
    assert proc.returncode == 0, proc.stderr
    before = _nft(netns, "list", "table", "inet", "incus").stdout
    nftables.apply(nftables.plan(_infra(A, B)))
    nftables.remove()
    assert _nft(netns, "list", "table", "inet", "incus").stdout == before


def test_every_rule_shape_reads_back_identically(netns):
    # Canonical form check for each kind of rule we render: if nft printed any of them
    # differently, the re-plan would not be empty and every reconcile would rewrite the table.
    host = Endpoint("host", "host")
    a1 = Endpoint("machine", "a1", "nfta", IP("10.220.1.1"))
    pols = (
        WEB,
        NetworkPolicy("udp set", Endpoint("domain", "nfta", "nfta"),
                      Endpoint("domain", "nftc", "nftc"), (5353, 53, 53), protocol="udp"),
        NetworkPolicy("all, both ways", Endpoint("domain", "nftb", "nftb"), a1,
                      bidirectional=True),
        NetworkPolicy("a1 → hôte (ssh) \"quoted\" " + "x" * 150, a1, host, (22,)),
        NetworkPolicy("host to b", host, Endpoint("domain", "nftb", "nftb"), (80, 443),
                      bidirectional=True),
        NetworkPolicy("host to a1, all", host, a1),
    )
    inf = _infra(A, B, C, policies=pols)
    nftables.apply(nftables.plan(inf))
    assert _live_lines(netns) == _texts(nftables.desired(inf))
    assert nftables.plan(inf).empty
