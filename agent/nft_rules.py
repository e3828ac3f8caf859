"""Rendering the `inet anklume` table from the validated model (pure: no system access).

Each rule is built as the JSON statements `nft -j` lists (agent/firewall.py compares those,
normalised, with the live table) and printed from them in nft syntax for the `nft -f` script,
so what is loaded and what is compared cannot drift apart.

Layout (every rule has a comment naming its origin, so a diff reads well):

- `forward` (hook forward, priority -1, i.e. before Incus's own `inet incus` table at 0):
  replies accepted, invalid dropped, same-bridge traffic accepted per enabled domain, one accept
  per policy direction (a `from: lan` policy matches what does not come from a domain bridge),
  then `iifname "net-*" oifname "net-*" drop` (between domains) and
  `oifname "net-*" drop`: nothing new enters a domain from anywhere else either (the LAN, the
  uplink, any other interface), even from a host that routes a domain's subnet through this
  machine. A domain's own traffic out (NAT to the internet) falls through to the chain's
  accept policy, and its replies come back as "replies".
- `input` (traffic from a domain to the host itself): replies accepted, per domain DHCP and
  DNS/ping to its own gateway (without DHCP a container loses its address), declared `to: host`
  policies, then everything else arriving from a `net-*` bridge is dropped.
- `output` (traffic from the host into a domain): replies accepted, DHCP server replies per
  domain (a DHCP offer does not match the client's broadcast in conntrack, so it is "new"),
  declared `from: host` policies, the provider address and port of each granted TCP service
  (Incus's proxy connects from the host), then new host-to-domain traffic is dropped. The host
  is an endpoint like any other: it reaches a domain only where a policy or a service says so.

Traffic that touches no `net-*` interface is never matched by input/output rules: the table
only ever tightens what concerns the domains.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from anklume.agent.firewall import FAMILY, TABLE, Chain, Firewall, FwRule, Stmt
from anklume.agent.model import Domain, Endpoint, Infra, NetworkPolicy

__all__ = ["BRIDGES", "CHAINS", "FAMILY", "TABLE", "Rule", "comment_text", "desired_rules",
           "firewall", "render", "render_removal"]

BRIDGES = "net-*"  # every domain bridge is net-<domain>; nft matches a trailing `*` as a prefix

# priority -1: before Incus's own `inet incus` table at 0.
CHAINS: tuple[Chain, ...] = (
    Chain("forward", "forward", -1),
    Chain("input", "input", -1),
    Chain("output", "output", -1),
)

_COMMENT_MAX = 128  # bytes; nft refuses longer comments


# --- statements, as nft's JSON writes them (firewall.stmt_text prints them) ---------------------

def _match(left: Any, right: Any, op: str = "==") -> Stmt:
    return {"match": {"op": op, "left": left, "right": right}}


def iif(name: str) -> Stmt:
    return _match({"meta": {"key": "iifname"}}, name)


def oif(name: str) -> Stmt:
    return _match({"meta": {"key": "oifname"}}, name)


def iif_not(name: str) -> Stmt:
    return _match({"meta": {"key": "iifname"}}, name, "!=")


def addr(field: str, ip: object) -> Stmt:
    return _match({"payload": {"protocol": "ip", "field": field}}, str(ip))


def port(protocol: str, field: str, ports: int | Iterable[int]) -> Stmt:
    uniq = [ports] if isinstance(ports, int) else sorted(set(ports))
    right: Any = uniq[0] if len(uniq) == 1 else {"set": uniq}
    return _match({"payload": {"protocol": protocol, "field": field}}, right)


def ct_state(*states: str) -> Stmt:
    return _match({"ct": {"key": "state"}}, list(states) if len(states) > 1 else states[0], "in")


def icmp_type(t: str) -> Stmt:
    return _match({"payload": {"protocol": "icmp", "field": "type"}}, t)


COUNTER: Stmt = {"counter": None}
ACCEPT: Stmt = {"accept": None}
DROP: Stmt = {"drop": None}
REPLIES = ct_state("established", "related")


@dataclass(frozen=True)
class Rule:
    chain: str
    stmts: tuple[Stmt, ...]
    comment: str

    @property
    def fw(self) -> FwRule:
        return FwRule.of(self.chain, self.stmts, comment_text(self.comment))

    @property
    def text(self) -> str:
        return self.fw.text


def comment_text(s: str, limit: int = _COMMENT_MAX) -> str:
    """A comment nft accepts: no quotes/backslashes/control characters, at most 128 bytes."""
    s = s.replace('"', "'").replace("\\", "/")
    s = re.sub(r"[\s\x00-\x1f\x7f]+", " ", s).strip()
    raw = s.encode()
    if len(raw) > limit:
        # Cut on a character boundary: a split UTF-8 sequence would not round-trip.
        s = raw[:limit].decode(errors="ignore")
    return s


def _ports(protocol: str, ports: tuple[int, ...] | None) -> list[Stmt]:
    # `ports: all` means the whole traffic between the endpoints, ICMP included: the protocol
    # only matters together with ports (it defaults to tcp, so it cannot mean "all tcp").
    return [] if ports is None else [port(protocol, "dport", ports)]


class _Endpoints:
    """Resolves policy endpoints against the enabled domains."""

    def __init__(self, infra: Infra) -> None:
        self.enabled = {d.name: d for d in infra.enabled_domains}

    def domain_of(self, ep: Endpoint) -> Domain | None:
        if ep.kind in ("host", "lan"):
            return None
        return self.enabled.get(ep.domain or ep.name)

    def live(self, ep: Endpoint) -> bool:
        """False when the endpoint lives in a disabled domain: the policy has nothing to open."""
        return ep.kind in ("host", "lan") or self.domain_of(ep) is not None

    def side(self, ep: Endpoint, source: bool) -> tuple[Stmt, list[Stmt]]:
        """(interface match, address matches) for one endpoint of a forwarded flow."""
        dom = self.domain_of(ep)
        assert dom is not None
        iface = iif(dom.bridge) if source else oif(dom.bridge)
        # A machine is matched by its bridge *and* its IP: Incus bridges do not filter source
        # addresses, so the IP alone could be spoofed from another domain.
        ips = []
        if ep.kind == "machine" and ep.ip is not None:
            ips.append(addr("saddr" if source else "daddr", ep.ip))
        return iface, ips


def _policy_rules(ends: _Endpoints, pol: NetworkPolicy) -> list[Rule]:
    if not (ends.live(pol.source) and ends.live(pol.target)):
        return []
    directions = [(pol.source, pol.target, "")]
    if pol.bidirectional:
        directions.append((pol.target, pol.source, " (reverse)"))
    ports = _ports(pol.protocol, pol.ports)
    label = pol.description or f"{pol.source.name} -> {pol.target.name}"
    rules = []
    for src, dst, suffix in directions:
        # Shorten the description, not the suffix: a policy's two directions stay distinct.
        comment = comment_text(f"policy: {label}", _COMMENT_MAX - len(suffix)) + suffix
        if src.kind == "host" and dst.kind == "host":
            continue  # nothing between the host and itself to open
        if dst.kind == "host":
            s_if, s_ip = ends.side(src, True)
            rules.append(Rule("input", (s_if, *s_ip, *ports, ACCEPT), comment))
        elif src.kind == "host":
            d_if, d_ip = ends.side(dst, False)
            rules.append(Rule("output", (d_if, *d_ip, *ports, ACCEPT), comment))
        elif src.kind == "lan":
            # From any interface that is not a domain's bridge (the uplink, a LAN): validation
            # made sure this names its ports and goes into a domain.
            d_if, d_ip = ends.side(dst, False)
            rules.append(Rule("forward", (iif_not(BRIDGES), d_if, *d_ip, *ports, ACCEPT),
                              comment))
        else:
            (s_if, s_ip), (d_if, d_ip) = ends.side(src, True), ends.side(dst, False)
            # Interfaces first, then addresses: the order nft keeps when listing.
            rules.append(Rule("forward", (s_if, d_if, *s_ip, *d_ip, *ports, ACCEPT), comment))
    return rules


def _service_rules(ends: _Endpoints, infra: Infra) -> list[Rule]:
    """A granted TCP service (agent/services.py) is reached by Incus's forkproxy from the host,
    so it passes our output chain as new host-to-domain traffic: open exactly the provider's
    address and port on its bridge, once per port however many consumers it has. The provider's
    other ports stay closed, and the consumer's domain gets no route to it at all."""
    rules: list[Rule] = []
    seen: set[tuple[str, int]] = set()
    for g in infra.services:
        dom = ends.enabled.get(g.provider_domain)
        if g.port is None or dom is None or (g.provider, g.port) in seen:
            continue
        seen.add((g.provider, g.port))
        rules.append(Rule("output", (oif(dom.bridge), addr("daddr", g.provider_ip),
                                     port("tcp", "dport", g.port), ACCEPT),
                          f"service: {g.provider}/{g.service} (proxy)"))
    return rules


def desired_rules(infra: Infra) -> tuple[Rule, ...]:
    ends = _Endpoints(infra)
    domains = infra.enabled_domains
    replies = "anklume: replies to allowed connections"
    fwd: list[Rule] = [
        Rule("forward", (REPLIES, ACCEPT), replies),
        Rule("forward", (ct_state("invalid"), DROP), "anklume: invalid packets"),
    ]
    inp: list[Rule] = [Rule("input", (iif(BRIDGES), REPLIES, ACCEPT), replies)]
    out: list[Rule] = [Rule("output", (oif(BRIDGES), REPLIES, ACCEPT), replies)]
    for d in domains:
        br, gw = d.bridge, d.gateway
        dns = f"domain {d.name}: DNS to its gateway"
        fwd.append(Rule("forward", (iif(br), oif(br), ACCEPT), f"domain {d.name}: same bridge"))
        # DHCP requests come from 0.0.0.0 to the broadcast address: match the bridge only.
        inp.append(Rule("input", (iif(br), port("udp", "dport", 67), ACCEPT),
                        f"domain {d.name}: DHCP"))
        inp.append(Rule("input", (iif(br), addr("daddr", gw), port("udp", "dport", 53), ACCEPT),
                        dns))
        inp.append(Rule("input", (iif(br), addr("daddr", gw), port("tcp", "dport", 53), ACCEPT),
                        dns))
        inp.append(Rule("input", (iif(br), addr("daddr", gw), icmp_type("echo-request"), ACCEPT),
                        f"domain {d.name}: ping its gateway"))
        out.append(Rule("output", (oif(br), port("udp", "sport", 67), port("udp", "dport", 68),
                                   ACCEPT), f"domain {d.name}: DHCP replies"))
    for pol in infra.policies:
        for r in _policy_rules(ends, pol):
            {"forward": fwd, "input": inp, "output": out}[r.chain].append(r)
    out += _service_rules(ends, infra)
    fwd.append(Rule("forward", (iif(BRIDGES), oif(BRIDGES), COUNTER, DROP),
                    "anklume: isolation between domains"))
    fwd.append(Rule("forward", (oif(BRIDGES), COUNTER, DROP),
                    "anklume: nothing enters a domain from outside unless declared"))
    inp.append(Rule("input", (iif(BRIDGES), COUNTER, DROP),
                    "anklume: domains reach the host only as declared"))
    out.append(Rule("output", (oif(BRIDGES), COUNTER, DROP),
                    "anklume: the host reaches domains only as declared"))
    return (*fwd, *inp, *out)


def firewall(infra: Infra) -> Firewall:
    """The desired table: none at all without an enabled domain (rules never outlive the
    domains they were made for)."""
    if not infra.enabled_domains:
        return Firewall()
    rules = desired_rules(infra)
    ordered = [r.fw for c in CHAINS for r in rules if r.chain == c.name]
    return Firewall(present=True, chains=CHAINS, rules=tuple(ordered))


def render(fw: Firewall) -> str:
    """One `nft -f` script that makes the table `fw`, in a single transaction.

    `table ... {}` first makes the `delete` valid when the table does not exist yet; nft runs
    the whole file as one netlink batch, so the old table stays until the new one is committed,
    and any error leaves the old table untouched. An absent `fw` is the removal alone.
    """
    if not fw.present:
        return render_removal()
    out = [
        "# Generated by the anklume agent: changes are overwritten at the next reconcile.",
        f"table {FAMILY} {TABLE} {{}}",
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
    ]
    for i, c in enumerate(fw.chains):
        if i:
            out.append("")
        out.append(f"\tchain {c.name} {{")
        out.append(f"\t\t{c.header}")
        out.extend(f"\t\t{r.text}" for r in fw.rules if r.chain == c.name)
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def render_removal() -> str:
    """Delete the table if it exists (the empty `table` line makes the delete idempotent)."""
    return f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n"
