"""network_policies: resolve each `from`/`to` to an Endpoint and check ports and protocol."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from anklume.agent import schema, values
from anklume.agent.model import Endpoint, NetworkPolicy
from anklume.problems import KeyPath, Report, describe


@dataclass(frozen=True)
class Names:
    """What a reference may name."""

    enabled: Mapping[str, bool]  # domain -> enabled
    machines: Mapping[str, str]  # machine -> its domain
    ips: Mapping[str, ipaddress.IPv4Address]  # machine -> address (when assigned)


def reference(r: Report, names: Names, name: object, path: KeyPath, allow_host: bool = True,
              allow_lan: bool = False) -> Endpoint | None:
    """Resolve a policy endpoint or a volume consumer: `host`, `lan` (where allowed), a domain
    or a machine."""
    if not isinstance(name, str):
        r.error(path, f"must be a name, not {describe(name)}")
        return None
    if name == values.HOST and allow_host:
        return Endpoint("host", values.HOST)
    if name == values.LAN:
        if allow_lan:
            return Endpoint("lan", values.LAN)
        r.error(path, f'"{values.LAN}" can only be a network policy\'s "from": the domains '
                "reach the LAN already, through NAT, and it has nothing to share")
        return None
    is_domain, domain = name in names.enabled, names.machines.get(name)
    if is_domain and domain is not None:
        r.error(path, f'"{name}" is both a domain and a machine', "rename one of them")
        return None
    if is_domain:
        return Endpoint("domain", name, domain=name)
    if domain is not None:
        return Endpoint("machine", name, domain=domain, ip=names.ips.get(name))
    choices = [*names.enabled, *names.machines, *([values.HOST] if allow_host else [])]
    r.error(path, f'"{name}" is not a known domain or machine'
            + (' (nor "host")' if allow_host else ""), schema.suggest(name, choices))
    return None


def ports(r: Report, raw: object, path: KeyPath) -> tuple[int, ...] | bool | None:
    """None for all ports, the ports (duplicates dropped), or False when invalid (reported)."""
    if raw == "all":
        return None
    if not isinstance(raw, list) or not raw:
        r.error(path, "must not be empty" if raw == [] else
                f"must be a list of ports or all, not {describe(raw)}",
                'e.g. [80, 443] or "all"')
        return False
    ok = True
    out: list[int] = []
    for i, port in enumerate(raw):
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            r.error((*path, i), f"{values.show(port)} is not a port (1-65535)")
            ok = False
        elif port not in out:
            out.append(port)
    return tuple(out) if ok else False


def _from_lan_ok(r: Report, p: Mapping[str, object], dst: Endpoint,
                 allowed: tuple[int, ...] | None, path: KeyPath) -> bool:
    """A policy that opens a domain to the LAN: only named ports, only one way, and only into a
    domain (the isolation table does not filter the LAN's traffic to the appliance itself)."""
    ok = True
    if dst.kind == "host":
        r.error((*path, "to"), f'a policy from "{values.LAN}" must go to a domain or a machine',
                "the isolation table only guards the domains; the appliance's own ports are "
                "not its concern")
        ok = False
    if allowed is None:
        r.error((*path, "ports"), f'a policy from "{values.LAN}" must name its ports',
                "e.g. [443]: all ports would open the whole domain to every neighbour")
        ok = False
    if p["bidirectional"]:
        r.error((*path, "bidirectional"), f'a policy from "{values.LAN}" cannot be '
                "bidirectional", "the domains reach the LAN already, through NAT")
        ok = False
    return ok


def resolve(r: Report, names: Names, raw: list[object]) -> list[NetworkPolicy]:
    """The policies in declaration order; those naming a disabled domain are left out (with a
    warning) since nothing of that domain exists to reach."""
    out: list[NetworkPolicy] = []
    for i, praw in enumerate(raw):
        path: KeyPath = ("network_policies", i)
        p = schema.read("policy", praw, path, r)
        if p is None:
            continue
        src = reference(r, names, p["from"], (*path, "from"), allow_lan=True) \
            if "from" in p else None
        dst = reference(r, names, p["to"], (*path, "to")) if "to" in p else None
        allowed = ports(r, p["ports"], (*path, "ports"))
        proto = values.choice(r, p["protocol"], ("tcp", "udp"), (*path, "protocol"))
        if src is None or dst is None or allowed is False:
            continue
        assert not isinstance(allowed, bool)
        if src.kind == "lan" and not _from_lan_ok(r, p, dst, allowed, path):
            continue
        off = [e.domain for e in (src, dst) if e.domain and not names.enabled.get(e.domain)]
        if off:
            r.warn(path, f'names disabled domain "{off[0]}": ignored until it is enabled')
            continue
        if src == dst:
            r.warn(path, f'from and to are both "{src.name}": traffic within one place is '
                   "never filtered, so this policy changes nothing")
        out.append(NetworkPolicy(str(p["description"]), src, dst, allowed, proto,
                                 bool(p["bidirectional"])))
    return out
