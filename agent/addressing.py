"""The addressing convention: a /24 per domain, its number encoding the domain's trust zone.

Subnet: 10.<zone_base + zone offset>.<seq>.0/24 (or <base_subnet>.<subnet_id>.0/24 in the legacy
form). Hosts: .1-.99 static, .100-.199 DHCP, .254 gateway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from anklume.agent.model import TrustLevel
from anklume.problems import Report

STATIC_FIRST, STATIC_LAST = 1, 99
MAX_SEQ = 254  # subnet_id is 0-254 in the format
STATIC_HINT = ".1-.99 are static addresses; .100-.199 are for DHCP and .254 is the gateway"


@dataclass(frozen=True)
class DomainRequest:
    name: str
    trust_level: TrustLevel
    subnet_id: int | None  # explicit seq, already range-checked


@dataclass(frozen=True)
class MachineRequest:
    name: str
    ip: str | None  # as written; None: assign one


def _path(domain: str, *rest: str) -> tuple[str, ...]:
    return ("domains", domain, *rest)


def assign_subnets(domains: Sequence[DomainRequest], zone_base: int, base_octet: int = 10,
                   legacy_base: str | None = None, *, report: Report
                   ) -> dict[str, tuple[int, ipaddress.IPv4Network]]:
    """Give every domain (disabled ones included, so enabling one later renumbers nothing)
    its seq and subnet."""
    if legacy_base is not None:
        return _legacy_subnets(domains, legacy_base, report)
    out: dict[str, tuple[int, ipaddress.IPv4Network]] = {}
    zones: dict[int, list[DomainRequest]] = {}
    for d in domains:
        zones.setdefault(zone_base + d.trust_level.zone_offset, []).append(d)
    for second, members in zones.items():
        taken: dict[int, str] = {}
        for d in members:
            if d.subnet_id is None:
                continue
            other = taken.get(d.subnet_id)
            if other is not None:
                report.error(_path(d.name, "subnet_id"),
                             f"subnet {base_octet}.{second}.{d.subnet_id}.0/24 is also "
                             f'used by domain "{other}"',
                             "give each domain of the same trust level its own subnet_id")
                continue
            taken[d.subnet_id] = d.name
            out[d.name] = (d.subnet_id, _net(base_octet, second, d.subnet_id))
        # Alphabetical, not declaration order: reordering a file must not renumber domains.
        free = (s for s in range(MAX_SEQ + 1) if s not in taken)
        for d in sorted((d for d in members if d.subnet_id is None), key=lambda d: d.name):
            seq = next(free, None)
            if seq is None:
                report.error(_path(d.name), f"no subnet left in zone {base_octet}.{second}.0.0/16",
                             "at most 255 domains fit in one trust level")
                continue
            out[d.name] = (seq, _net(base_octet, second, seq))
    return out


def _net(a: int, b: int, c: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{a}.{b}.{c}.0/24")


def parse_legacy_base(base: str) -> tuple[int, int] | None:
    """`"10.100"` -> (10, 100); None if it is not two octets."""
    parts = base.split(".")
    if len(parts) != 2 or not all(p.isdigit() and p.isascii() and len(p) <= 3 for p in parts):
        return None
    a, b = int(parts[0]), int(parts[1])
    return (a, b) if a <= 255 and b <= 255 else None


def _legacy_subnets(domains: Sequence[DomainRequest], base: str, report: Report
                    ) -> dict[str, tuple[int, ipaddress.IPv4Network]]:
    out: dict[str, tuple[int, ipaddress.IPv4Network]] = {}
    octets = parse_legacy_base(base)
    if octets is None:
        return out  # reported by the caller, which knows the global settings
    taken: dict[int, str] = {}
    for d in domains:
        if d.subnet_id is None:
            report.error(_path(d.name, "subnet_id"),
                         "missing: with global.base_subnet every domain needs a subnet_id",
                         "or drop base_subnet to have subnets assigned by trust level")
            continue
        other = taken.get(d.subnet_id)
        if other is not None:
            report.error(_path(d.name, "subnet_id"),
                         f'subnet {base}.{d.subnet_id}.0/24 is also used by domain "{other}"')
            continue
        taken[d.subnet_id] = d.name
        out[d.name] = (d.subnet_id, _net(*octets, d.subnet_id))
    return out


def assign_ips(domain: str, subnet: ipaddress.IPv4Network, machines: Sequence[MachineRequest],
               *, report: Report) -> dict[str, ipaddress.IPv4Address]:
    """Check explicit IPs, then give the others the lowest free static address, in the order
    the machines are declared."""
    out: dict[str, ipaddress.IPv4Address] = {}
    used: dict[int, str] = {}
    for m in machines:
        if m.ip is None:
            continue
        where = _path(domain, "machines", m.name, "ip")
        try:
            ip = ipaddress.IPv4Address(m.ip.strip())
        except ValueError:
            hint = "write the address alone, without a prefix length" if "/" in m.ip else None
            report.error(where, f'"{m.ip}" is not a valid IPv4 address', hint)
            continue
        if ip not in subnet:
            report.error(where, f'{ip} is outside the subnet of domain "{domain}" ({subnet})',
                         f"use an address of {subnet} between .1 and .99, or leave ip out")
            continue
        host = int(ip) - int(subnet.network_address)
        if not STATIC_FIRST <= host <= STATIC_LAST:
            report.error(where, f"{ip} is outside the static range .1-.99", STATIC_HINT)
            continue
        other = used.get(host)
        if other is not None:
            report.error(where, f'{ip} is also the address of machine "{other}"')
            continue
        used[host] = m.name
        out[m.name] = ip
    free = (h for h in range(STATIC_FIRST, STATIC_LAST + 1) if h not in used)
    exhausted = False
    for m in machines:
        if m.ip is not None:
            continue
        spare = next(free, None)
        if spare is None:
            if not exhausted:
                report.error(_path(domain, "machines"),
                             f'no static address left in domain "{domain}" (.1-.99 all used)',
                             "split the machines over more domains")
            exhausted = True
            continue
        out[m.name] = subnet.network_address + spare
    return out
