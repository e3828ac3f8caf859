"""Rendering and planning of the `inet anklume` table from model fixtures (no live table).

The `nft -c` checks run the real nft parser and kernel validation in check mode: nothing is
committed, so they are safe on the host.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anklume.agent import firewall, nft_live, nftables
from anklume.agent.model import (
    Domain,
    Endpoint,
    GlobalSettings,
    Infra,
    Machine,
    NetworkPolicy,
    TrustLevel,
)
from anklume.agent.nft_rules import CHAINS, comment_text, desired_rules, render_removal

IP = ipaddress.IPv4Address
NET = ipaddress.IPv4Network

# Check mode still talks to the kernel (netlink), so it needs CAP_NET_ADMIN.
needs_nft = pytest.mark.skipif(shutil.which("nft") is None or os.geteuid() != 0,
                               reason="needs nft and root")


def domain(name: str, subnet: str, *machines: tuple[str, str], enabled: bool = True,
           trust: TrustLevel = TrustLevel.SEMI_TRUSTED) -> Domain:
    net = NET(subnet)
    return Domain(name=name, subnet=net, seq=net.network_address.packed[2], enabled=enabled,
                  trust_level=trust,
                  machines=tuple(Machine(name=m, domain=name, ip=IP(ip)) for m, ip in machines))


def ep_domain(name: str) -> Endpoint:
    return Endpoint(kind="domain", name=name, domain=name)


def ep_machine(name: str, dom: str, ip: str) -> Endpoint:
    return Endpoint(kind="machine", name=name, domain=dom, ip=IP(ip))


HOST = Endpoint(kind="host", name="host")


def infra(*domains: Domain, policies: tuple[NetworkPolicy, ...] = (),
          mode: str = "host") -> Infra:
    return Infra(project_name="t", settings=GlobalSettings(firewall_mode=mode),
                 domains=domains, policies=policies)


PRO = domain("pro", "10.120.1.0/24", ("dev", "10.120.1.1"), ("db", "10.120.1.2"))
PERSO = domain("perso", "10.120.2.0/24", ("web", "10.120.2.1"))
LAB = domain("lab", "10.140.1.0/24", ("box", "10.140.1.1"), trust=TrustLevel.UNTRUSTED)
OFF = domain("off", "10.120.3.0/24", ("old", "10.120.3.1"), enabled=False)


def texts(fw: firewall.Firewall) -> list[str]:
    return [t for _, t in fw.lines()]


def listing(inf: Infra, *, packets: int = 0, handles: bool = True) -> dict:
    """What `nft -j list table inet anklume` prints for the table we render for `inf`."""
    out: list[dict] = [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
                       {"table": {"family": "inet", "name": "anklume", "handle": 3}}]
    for i, c in enumerate(CHAINS):
        out.append({"chain": {"family": "inet", "table": "anklume", "name": c.name,
                              "handle": i + 1, "type": "filter", "hook": c.hook, "prio": -1,
                              "policy": "accept"}})
    order = [c.name for c in CHAINS]
    for h, r in enumerate(sorted(desired_rules(inf), key=lambda r: order.index(r.chain))):
        expr = [{"counter": {"packets": packets, "bytes": packets * 60}} if "counter" in x
                else x for x in r.stmts]
        out.append({"rule": {"family": "inet", "table": "anklume", "chain": r.chain,
                             **({"handle": 10 + h} if handles else {}),
                             "comment": comment_text(r.comment), "expr": expr}})
    return {"nftables": out}


def rules_of(inf: Infra, chain: str) -> list[str]:
    return [r.text for r in desired_rules(inf) if r.chain == chain]


def test_golden_table_two_domains_no_policy():
    lines = texts(nftables.desired(infra(PRO, PERSO)))
    assert lines == [
        "table inet anklume",
        "forward: chain type filter hook forward priority -1; policy accept;",
        'forward: ct state established,related accept comment "anklume: replies to allowed '
        'connections"',
        'forward: ct state invalid drop comment "anklume: invalid packets"',
        'forward: iifname "net-pro" oifname "net-pro" accept comment "domain pro: same bridge"',
        'forward: iifname "net-perso" oifname "net-perso" accept comment "domain perso: same '
        'bridge"',
        'forward: iifname "net-*" oifname "net-*" counter drop comment "anklume: isolation '
        'between domains"',
        'forward: oifname "net-*" counter drop comment "anklume: nothing enters a domain from '
        'outside unless declared"',
        "input: chain type filter hook input priority -1; policy accept;",
        'input: iifname "net-*" ct state established,related accept comment "anklume: replies '
        'to allowed connections"',
        'input: iifname "net-pro" udp dport 67 accept comment "domain pro: DHCP"',
        'input: iifname "net-pro" ip daddr 10.120.1.254 udp dport 53 accept comment "domain '
        'pro: DNS to its gateway"',
        'input: iifname "net-pro" ip daddr 10.120.1.254 tcp dport 53 accept comment "domain '
        'pro: DNS to its gateway"',
        'input: iifname "net-pro" ip daddr 10.120.1.254 icmp type echo-request accept comment '
        '"domain pro: ping its gateway"',
        'input: iifname "net-perso" udp dport 67 accept comment "domain perso: DHCP"',
        'input: iifname "net-perso" ip daddr 10.120.2.254 udp dport 53 accept comment "domain '
        'perso: DNS to its gateway"',
        'input: iifname "net-perso" ip daddr 10.120.2.254 tcp dport 53 accept comment "domain '
        'perso: DNS to its gateway"',
        'input: iifname "net-perso" ip daddr 10.120.2.254 icmp type echo-request accept '
        'comment "domain perso: ping its gateway"',
        'input: iifname "net-*" counter drop comment "anklume: domains reach the host only as '
        'declared"',
        "output: chain type filter hook output priority -1; policy accept;",
        'output: oifname "net-*" ct state established,related accept comment "anklume: replies '
        'to allowed connections"',
        'output: oifname "net-pro" udp sport 67 udp dport 68 accept comment "domain pro: DHCP '
        'replies"',
        'output: oifname "net-perso" udp sport 67 udp dport 68 accept comment "domain perso: '
        'DHCP replies"',
        'output: oifname "net-*" counter drop comment "anklume: the host reaches domains only as '
        'declared"',
    ]


def test_script_replaces_the_table_in_one_file():
    script = nftables.render(infra(PRO))
    head = [ln for ln in script.splitlines() if not ln.startswith("#")][:3]
    # Declare (so delete cannot fail), delete, redefine: one nft -f transaction.
    assert head == ["table inet anklume {}", "delete table inet anklume", "table inet anklume {"]
    assert "flush" not in script


def test_forward_order_accepts_before_isolation_drop():
    pol = NetworkPolicy("dev to web", ep_machine("dev", "pro", "10.120.1.1"),
                        ep_machine("web", "perso", "10.120.2.1"), (80,))
    fwd = rules_of(infra(PRO, PERSO, policies=(pol,)), "forward")
    assert fwd[0].startswith("ct state established,related accept")
    assert fwd[1].startswith("ct state invalid drop")
    assert fwd[-2].startswith('iifname "net-*" oifname "net-*" counter drop')
    # Last: nothing new enters a domain from any other interface (the LAN, issue #20).
    assert fwd[-1].startswith('oifname "net-*" counter drop')
    assert fwd.index(next(r for r in fwd if "policy: dev to web" in r)) < len(fwd) - 2


def test_machine_to_machine_narrowed_by_bridge_and_ip():
    pol = NetworkPolicy("dev to web", ep_machine("dev", "pro", "10.120.1.1"),
                        ep_machine("web", "perso", "10.120.2.1"), (443, 80, 80))
    fwd = rules_of(infra(PRO, PERSO, policies=(pol,)), "forward")
    assert ('iifname "net-pro" oifname "net-perso" ip saddr 10.120.1.1 ip daddr 10.120.2.1 '
            'tcp dport { 80, 443 } accept comment "policy: dev to web"') in fwd
    assert not any("(reverse)" in r for r in fwd)


def test_domain_to_domain_narrowed_by_bridges_only():
    pol = NetworkPolicy("pro to lab dns", ep_domain("pro"), ep_domain("lab"), (53,),
                        protocol="udp")
    fwd = rules_of(infra(PRO, LAB, policies=(pol,)), "forward")
    assert ('iifname "net-pro" oifname "net-lab" udp dport 53 accept '
            'comment "policy: pro to lab dns"') in fwd


def test_all_ports_means_all_traffic():
    pol = NetworkPolicy("anything", ep_domain("pro"), ep_machine("box", "lab", "10.140.1.1"))
    fwd = rules_of(infra(PRO, LAB, policies=(pol,)), "forward")
    assert ('iifname "net-pro" oifname "net-lab" ip daddr 10.140.1.1 accept '
            'comment "policy: anything"') in fwd


def test_bidirectional_adds_the_reverse():
    pol = NetworkPolicy("sync", ep_machine("dev", "pro", "10.120.1.1"), ep_domain("perso"),
                        (22,), bidirectional=True)
    fwd = rules_of(infra(PRO, PERSO, policies=(pol,)), "forward")
    assert ('iifname "net-pro" oifname "net-perso" ip saddr 10.120.1.1 tcp dport 22 accept '
            'comment "policy: sync"') in fwd
    assert ('iifname "net-perso" oifname "net-pro" ip daddr 10.120.1.1 tcp dport 22 accept '
            'comment "policy: sync (reverse)"') in fwd


def test_host_policies_go_to_input_and_output():
    to_host = NetworkPolicy("dev ssh to host", ep_machine("dev", "pro", "10.120.1.1"), HOST,
                            (22,))
    from_host = NetworkPolicy("host to perso", HOST, ep_domain("perso"), (8080,),
                              bidirectional=True)
    inf = infra(PRO, PERSO, policies=(to_host, from_host))
    inp, out = rules_of(inf, "input"), rules_of(inf, "output")
    assert ('iifname "net-pro" ip saddr 10.120.1.1 tcp dport 22 accept '
            'comment "policy: dev ssh to host"') in inp
    assert ('oifname "net-perso" tcp dport 8080 accept comment "policy: host to perso"') in out
    assert ('iifname "net-perso" tcp dport 8080 accept '
            'comment "policy: host to perso (reverse)"') in inp
    assert not any("policy" in r for r in rules_of(inf, "forward"))
    # Declared host policies come before the final drop of each chain.
    assert inp[-1].startswith('iifname "net-*" counter drop')
    assert out[-1].startswith('oifname "net-*" counter drop')


def test_a_lan_policy_opens_its_ports_into_the_domain_from_outside_the_bridges():
    pol = NetworkPolicy("web from the LAN", Endpoint("lan", "lan"),
                        ep_machine("web", "perso", "10.120.2.1"), (443,))
    fwd = rules_of(infra(PRO, PERSO, policies=(pol,)), "forward")
    rule = ('iifname != "net-*" oifname "net-perso" ip daddr 10.120.2.1 tcp dport 443 accept '
            'comment "policy: web from the LAN"')
    # Before both drops: nothing else of the domain, and no other domain, is opened.
    assert fwd.index(rule) < fwd.index(next(r for r in fwd if "isolation between" in r))
    assert not any("policy" in r for r in rules_of(infra(PRO, PERSO, policies=(pol,)), "input"))


def test_host_to_host_policy_renders_nothing():
    pol = NetworkPolicy("silly", HOST, HOST, (22,))
    assert not any("silly" in r.text for r in desired_rules(infra(PRO, policies=(pol,))))


def test_disabled_domain_and_its_policies_are_absent():
    pols = (
        NetworkPolicy("to off", ep_domain("pro"), ep_domain("off"), (22,)),
        NetworkPolicy("old to host", ep_machine("old", "off", "10.120.3.1"), HOST, None),
    )
    script = nftables.render(infra(PRO, OFF, policies=pols))
    assert "net-off" not in script
    assert "10.120.3." not in script
    assert "to off" not in script and "old to host" not in script


def test_every_rule_names_its_origin():
    pol = NetworkPolicy("dev to web", ep_machine("dev", "pro", "10.120.1.1"),
                        ep_machine("web", "perso", "10.120.2.1"), (80,), bidirectional=True)
    for r in desired_rules(infra(PRO, PERSO, LAB, policies=(pol,))):
        assert r.comment.startswith(("anklume: ", "domain ", "policy: ")), r
        assert r.text.endswith(f'comment "{r.comment}"')


def test_policy_without_description_gets_endpoint_names():
    pol = NetworkPolicy("", ep_domain("pro"), ep_domain("perso"), (22,))
    assert any('comment "policy: pro -> perso"' in r for r in
               rules_of(infra(PRO, PERSO, policies=(pol,)), "forward"))


def test_comment_sanitized_for_nft():
    assert comment_text('say "hi"\\\n now') == "say 'hi'/ now"
    long = "é" * 100  # 200 bytes: cut on a character boundary
    out = comment_text(long)
    assert len(out.encode()) <= 128 and out == "é" * 64


def test_long_description_keeps_the_reverse_suffix():
    pol = NetworkPolicy("d" * 300, ep_domain("pro"), ep_domain("perso"), (22,),
                        bidirectional=True)
    comments = [r.comment for r in desired_rules(infra(PRO, PERSO, policies=(pol,)))
                if r.comment.startswith("policy")]
    assert len(comments) == 2 and comments[0] != comments[1]
    assert comments[1].endswith(" (reverse)")
    assert all(len(c.encode()) == 128 for c in comments)


@given(st.text(max_size=300))
def test_comment_always_fits(s):
    out = comment_text(s)
    assert len(out.encode()) <= 128
    assert '"' not in out and "\\" not in out and "\n" not in out


def test_parse_ignores_handles_counters_and_nft_version_spellings():
    inf = infra(PRO, PERSO)
    doc = listing(inf, packets=12)
    # nft 1.1 may write a single flag with == where 1.0.6 writes `in`, and a one-port set.
    for obj in doc["nftables"]:
        for stmt in obj.get("rule", {}).get("expr", []):
            m = stmt.get("match", {})
            if m.get("right") == "invalid":
                m["op"] = "=="
            if m.get("right") == 67:
                m["right"] = {"set": [67]}
    live = firewall.parse(doc)
    assert live.lines() == nftables.desired(inf).lines()
    assert firewall.parse(None) == firewall.Firewall()
    assert firewall.parse(None).lines() == []


def test_foreign_rule_is_shown_in_nft_syntax_or_as_json():
    doc = listing(infra(PRO))
    doc["nftables"].append({"rule": {"family": "inet", "table": "anklume", "chain": "forward",
                                     "handle": 99, "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "net-x"}},
        {"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": 22}},
        {"jump": {"target": "elsewhere"}}]}})
    added, removed = firewall.diff(firewall.parse(doc), nftables.desired(infra(PRO)))
    assert added == ()
    assert removed == ('forward: iifname "net-x" tcp dport != 22 {"jump": {"target": '
                       '"elsewhere"}}',)


def test_diff_is_order_sensitive_and_empty_when_identical():
    one = nftables.desired(infra(PRO, PERSO))
    assert firewall.diff(one, one) == ((), ())
    swapped = firewall.Firewall(True, one.chains, (one.rules[1], one.rules[0], *one.rules[2:]))
    added, removed = firewall.diff(one, swapped)
    assert added and removed  # a moved rule changes evaluation order: it is a change


# --- plan/apply against a fake live table ------------------------------------------------------

class FakeKernel:
    def __init__(self, listing: dict | None = None) -> None:
        self.listing = listing
        self.loaded: list[str] = []

    def read_json(self) -> dict | None:
        return self.listing

    def load(self, script: str) -> None:
        self.loaded.append(script)


@pytest.fixture
def kernel(monkeypatch) -> FakeKernel:
    k = FakeKernel()
    monkeypatch.setattr(nft_live, "read_json", k.read_json)
    monkeypatch.setattr(nft_live, "load", k.load)
    return k


def test_plan_without_table_adds_everything(kernel):
    change = nftables.plan(infra(PRO, PERSO))
    assert not change.removed
    assert change.added == tuple(texts(nftables.desired(infra(PRO, PERSO))))
    nftables.apply(change)
    assert kernel.loaded == [change.ruleset]


def test_plan_identical_is_empty_and_apply_does_nothing(kernel):
    inf = infra(PRO, PERSO)
    # What nft lists back: our rules with handles and counter values added.
    kernel.listing = listing(inf, packets=5)
    change = nftables.plan(inf)
    assert change.empty
    assert change.describe() == ["table inet anklume: up to date"]
    nftables.apply(change)
    assert kernel.loaded == []


def test_plan_change_is_exactly_the_diff(kernel):
    kernel.listing = listing(infra(PRO, PERSO))
    pol = NetworkPolicy("dev to web", ep_machine("dev", "pro", "10.120.1.1"),
                        ep_machine("web", "perso", "10.120.2.1"), (80,))
    change = nftables.plan(infra(PRO, PERSO, policies=(pol,)))
    assert change.removed == ()
    assert change.added == (
        'forward: iifname "net-pro" oifname "net-perso" ip saddr 10.120.1.1 ip daddr 10.120.2.1 '
        'tcp dport 80 accept comment "policy: dev to web"',
    )
    assert change.describe() == [f"+ {change.added[0]}"]


def test_plan_with_no_enabled_domain_removes_the_table(kernel):
    kernel.listing = listing(infra(PRO))
    change = nftables.plan(infra(OFF))
    assert change.added == ()
    assert change.removed == tuple(texts(nftables.desired(infra(PRO))))
    assert "delete table inet anklume" in change.ruleset
    assert "chain" not in change.ruleset
    kernel.listing = None
    assert nftables.plan(infra()).empty


def test_firewall_mode_vm_warns_and_filters_on_host(kernel, caplog):
    caplog.set_level(logging.WARNING, logger="anklume")
    logging.getLogger("anklume").propagate = True  # let caplog see it even after log.setup()
    change = nftables.plan(infra(PRO, PERSO, mode="vm"))
    assert "firewall_mode vm is not supported" in caplog.text
    assert change.ruleset == nftables.render(infra(PRO, PERSO))


# --- the real nft parser (check mode: nothing is committed) ------------------------------------

@needs_nft
def test_rendered_script_accepted_by_nft_check_mode():
    pols = (
        NetworkPolicy('dev "to" web', ep_machine("dev", "pro", "10.120.1.1"),
                      ep_machine("web", "perso", "10.120.2.1"), (80, 443), bidirectional=True),
        NetworkPolicy("pro to lab", ep_domain("pro"), ep_domain("lab"), (53,), protocol="udp"),
        NetworkPolicy("all", ep_domain("perso"), ep_domain("lab")),
        NetworkPolicy("to host", ep_machine("box", "lab", "10.140.1.1"), HOST, (22,),
                      bidirectional=True),
        NetworkPolicy("from host" + "x" * 200, HOST, ep_domain("pro"), (8080,)),
        NetworkPolicy("from the LAN", Endpoint("lan", "lan"), ep_domain("lab"), (443,)),
    )
    nft_live.check(nftables.render(infra(PRO, PERSO, LAB, OFF, policies=pols)))


@needs_nft
def test_removal_script_accepted_by_nft_check_mode():
    nft_live.check(render_removal())
