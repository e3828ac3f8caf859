"""Rendering the `inet anklume` table from the validated model (pure: no system access).

Rules are written in the exact form `nft list table` prints them back (sorted port sets,
`priority filter - 1`, one space between tokens), so the desired table and the live one can be
compared line by line without a semantic nft parser of our own.

Layout (every rule has a comment naming its origin, so a diff reads well):

- `forward` (hook forward, priority filter - 1, i.e. before Incus's own `inet incus` table at 0):
  replies accepted, invalid dropped, same-bridge traffic accepted per enabled domain, one accept
  per policy direction, then `iifname "net-*" oifname "net-*" drop`. Anything else, e.g. a bridge
  to the uplink (NAT to the internet), falls through to the chain's accept policy.
- `input` (traffic from a domain to the host itself): replies accepted, per domain DHCP and
  DNS/ping to its own gateway (without DHCP a container loses its address), declared `to: host`
  policies, then everything else arriving from a `net-*` bridge is dropped.
- `output` (traffic from the host into a domain): replies accepted, DHCP server replies per
  domain (a DHCP offer does not match the client's broadcast in conntrack, so it is "new"),
  declared `from: host` policies, then new host-to-domain traffic is dropped. The host is an
  endpoint like any other: it reaches a domain only where a policy says so.

Traffic that touches no `net-*` interface is never matched by input/output rules: the table
only ever tightens what concerns the domains.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from anklume.agent.model import Domain, Endpoint, Infra, NetworkPolicy

TABLE = "anklume"
FAMILY = "inet"
BRIDGES = "net-*"  # every domain bridge is net-<domain>; nft matches a trailing `*` as a prefix

# Chain headers exactly as nft 1.0.6 prints them back (it turns `priority -1` into this form).
CHAINS: dict[str, str] = {
    "forward": "type filter hook forward priority filter - 1; policy accept;",
    "input": "type filter hook input priority filter - 1; policy accept;",
    "output": "type filter hook output priority filter - 1; policy accept;",
}

_COMMENT_MAX = 128  # bytes; nft refuses longer comments


@dataclass(frozen=True)
class Rule:
    chain: str
    match: str  # the statement without its comment, in nft's canonical listing form
    comment: str

    @property
    def text(self) -> str:
        return f'{self.match} comment "{comment_text(self.comment)}"'


def comment_text(s: str, limit: int = _COMMENT_MAX) -> str:
    """A comment nft accepts: no quotes/backslashes/control characters, at most 128 bytes."""
    s = s.replace('"', "'").replace("\\", "/")
    s = re.sub(r"[\s\x00-\x1f\x7f]+", " ", s).strip()
    raw = s.encode()
    if len(raw) > limit:
        # Cut on a character boundary: a split UTF-8 sequence would not round-trip.
        s = raw[:limit].decode(errors="ignore")
    return s


def _ports(protocol: str, ports: tuple[int, ...] | None) -> str:
    # `ports: all` means the whole traffic between the endpoints, ICMP included: the protocol
    # only matters together with ports (it defaults to tcp, so it cannot mean "all tcp").
    if ports is None:
        return ""
    uniq = sorted(set(ports))
    if len(uniq) == 1:
        return f"{protocol} dport {uniq[0]}"
    return f"{protocol} dport {{ {', '.join(str(p) for p in uniq)} }}"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


class _Endpoints:
    """Resolves policy endpoints against the enabled domains."""

    def __init__(self, infra: Infra) -> None:
        self.enabled = {d.name: d for d in infra.enabled_domains}

    def domain_of(self, ep: Endpoint) -> Domain | None:
        if ep.kind == "host":
            return None
        return self.enabled.get(ep.domain or ep.name)

    def live(self, ep: Endpoint) -> bool:
        """False when the endpoint lives in a disabled domain: the policy has nothing to open."""
        return ep.kind == "host" or self.domain_of(ep) is not None

    def side(self, ep: Endpoint, source: bool) -> tuple[str, str]:
        """(interface match, address match) for one endpoint of a forwarded flow."""
        dom = self.domain_of(ep)
        assert dom is not None
        iface = f'{"iifname" if source else "oifname"} "{dom.bridge}"'
        # A machine is matched by its bridge *and* its IP: Incus bridges do not filter source
        # addresses, so the IP alone could be spoofed from another domain.
        addr = ""
        if ep.kind == "machine" and ep.ip is not None:
            addr = f"ip {'saddr' if source else 'daddr'} {ep.ip}"
        return iface, addr


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
            rules.append(Rule("input", _join(*ends.side(src, True), ports, "accept"), comment))
        elif src.kind == "host":
            rules.append(Rule("output", _join(*ends.side(dst, False), ports, "accept"), comment))
        else:
            (s_if, s_ip), (d_if, d_ip) = ends.side(src, True), ends.side(dst, False)
            # Interfaces first, then addresses: the order nft keeps when listing.
            match = _join(s_if, d_if, s_ip, d_ip, ports, "accept")
            rules.append(Rule("forward", match, comment))
    return rules


def desired_rules(infra: Infra) -> tuple[Rule, ...]:
    ends = _Endpoints(infra)
    domains = infra.enabled_domains
    fwd: list[Rule] = [
        Rule("forward", "ct state established,related accept",
             "anklume: replies to allowed connections"),
        Rule("forward", "ct state invalid drop", "anklume: invalid packets"),
    ]
    inp: list[Rule] = [
        Rule("input", f'iifname "{BRIDGES}" ct state established,related accept',
             "anklume: replies to allowed connections"),
    ]
    out: list[Rule] = [
        Rule("output", f'oifname "{BRIDGES}" ct state established,related accept',
             "anklume: replies to allowed connections"),
    ]
    for d in domains:
        br, gw = d.bridge, d.gateway
        fwd.append(Rule("forward", f'iifname "{br}" oifname "{br}" accept',
                        f"domain {d.name}: same bridge"))
        # DHCP requests come from 0.0.0.0 to the broadcast address: match the bridge only.
        inp.append(Rule("input", f'iifname "{br}" udp dport 67 accept', f"domain {d.name}: DHCP"))
        inp.append(Rule("input", f'iifname "{br}" ip daddr {gw} udp dport 53 accept',
                        f"domain {d.name}: DNS to its gateway"))
        inp.append(Rule("input", f'iifname "{br}" ip daddr {gw} tcp dport 53 accept',
                        f"domain {d.name}: DNS to its gateway"))
        inp.append(Rule("input", f'iifname "{br}" ip daddr {gw} icmp type echo-request accept',
                        f"domain {d.name}: ping its gateway"))
        out.append(Rule("output", f'oifname "{br}" udp sport 67 udp dport 68 accept',
                        f"domain {d.name}: DHCP replies"))
    for pol in infra.policies:
        for r in _policy_rules(ends, pol):
            {"forward": fwd, "input": inp, "output": out}[r.chain].append(r)
    fwd.append(Rule("forward", f'iifname "{BRIDGES}" oifname "{BRIDGES}" counter drop',
                    "anklume: isolation between domains"))
    inp.append(Rule("input", f'iifname "{BRIDGES}" counter drop',
                    "anklume: domains reach the host only as declared"))
    out.append(Rule("output", f'oifname "{BRIDGES}" counter drop',
                    "anklume: the host reaches domains only as declared"))
    return (*fwd, *inp, *out)


def render_rules(rules: Iterable[Rule]) -> str:
    """One `nft -f` script replacing the table in a single transaction.

    `table ... {}` first makes the `delete` valid when the table does not exist yet; nft runs
    the whole file as one netlink batch, so the old table stays until the new one is committed,
    and any error leaves the old table untouched.
    """
    rules = list(rules)
    out = [
        "# Generated by the anklume agent: changes are overwritten at the next reconcile.",
        f"table {FAMILY} {TABLE} {{}}",
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
    ]
    for i, (chain, header) in enumerate(CHAINS.items()):
        if i:
            out.append("")
        out.append(f"\tchain {chain} {{")
        out.append(f"\t\t{header}")
        out.extend(f"\t\t{r.text}" for r in rules if r.chain == chain)
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def render_removal() -> str:
    """Delete the table if it exists (the empty `table` line makes the delete idempotent)."""
    return f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n"


# --- normalization: the same parser reads our rendered script and nft's listing -------------

_HANDLE = re.compile(r"\s*# handle \d+$")
_COUNTER = re.compile(r"\bcounter packets \d+ bytes \d+")


def table_lines(text: str) -> list[str]:
    """The table as comparable lines: `table inet anklume`, then `<chain>: <statement>`.

    Accepts both `nft list table` output and a script from render_rules(). Handles and counter
    values are dropped (they change without any change of policy).
    """
    lines: list[str] = []
    chain: str | None = None
    depth = 0
    for raw in text.splitlines():
        line = _HANDLE.sub("", raw).strip()
        if not line or line.startswith("#"):
            continue
        line = _COUNTER.sub("counter", line)
        line = re.sub(r"\s+", " ", line)
        if depth == 0:
            # Only the opening `table inet anklume {` counts: the `{}` and `delete` lines of a
            # rendered script only prepare the replacement.
            if line == f"table {FAMILY} {TABLE} {{":
                lines.append(f"table {FAMILY} {TABLE}")
                depth = 1
            continue
        if line == "}":
            depth -= 1
            chain = None if depth == 1 else chain
            continue
        m = re.fullmatch(r"chain (\S+) \{", line)
        if depth == 1 and m:
            chain, depth = m.group(1), 2
            lines.append(f"{chain}: chain")
            continue
        if line.endswith("{"):
            # A set/map or anything else we never create: keep it visible in the diff.
            lines.append(f"{chain or '-'}: {line}")
            depth += 1
            continue
        lines.append(f"{chain or '-'}: {line}")
    return lines
