"""services: what a machine offers (a TCP port or a unix socket) and who may consume it.

Each (service, consumer machine) pair is one ServiceGrant, realised by desired.py as an Incus
proxy device `svc-<provider>-<service>` on the consumer: it listens inside the consumer (its
loopback 127.0.0.1:<listen>, or a unix socket path) and Incus's forkproxy connects from the host
to the provider: to its static IP and port, or, for a unix socket, to the grant's host end,
where the provider's own proxy `svc.<service>` connects to the socket inside the provider (so
a symlink the provider plants there cannot reach a host socket). That is how isolated domains
may talk: through one declared port, never through their networks, so a cross-domain grant is
allowed exactly because it is declared.

Rules (each an error with the key path):
- exactly one of `port` (1-65535) and `socket` (an absolute path); `listen` is the consumer side
  (a port for a TCP service, an absolute path for a socket; default: the same as the provider's);
- `consumers`: machines or whole domains (every machine in it, the provider excepted); naming
  the provider itself, an unknown name, or a disabled domain (the provider's or a consumer's)
  is an error: nothing of a disabled domain exists to connect;
- a consumer must be a container (Incus proxies into a VM only in NAT mode, on the host's
  addresses), and a socket provider too (the host reaches the socket through its root file
  system);
- two grants listening on the same port, or on the same path, in one consumer clash.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from anklume.agent import policies, schema, values
from anklume.agent.model import InstanceType, ServiceGrant
from anklume.problems import KeyPath, Report, describe


@dataclass(frozen=True)
class Provider:
    """What validation knows of a machine that may offer services."""
    name: str
    domain: str
    path: KeyPath
    type: InstanceType
    raw: Mapping[object, object]  # its `services:` mapping as written


def _port(r: Report, value: object, path: KeyPath) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    r.error(path, f"{values.show(value)} is not a port (1-65535)")
    return None


def resolve(r: Report, names: policies.Names, providers: Iterable[Provider],
            machines: Mapping[str, tuple[str, InstanceType]]) -> tuple[ServiceGrant, ...]:
    """Every grant, in declaration order. `machines`: name -> (domain, type) of all machines."""
    grants: list[ServiceGrant] = []
    listening: dict[tuple[str, str], tuple[str, KeyPath]] = {}  # (consumer, listen) -> grant
    for p in providers:
        for sname, sraw in p.raw.items():
            path: KeyPath = (*p.path, "services", str(sname))
            if not values.item(r, sname, path, "service"):
                continue
            v = schema.read("service", sraw, path, r)
            if v is None:
                continue
            spec = _endpoint(r, p, v, path)
            if spec is None:
                continue
            port, socket, listen = spec
            if not names.enabled.get(p.domain, False):
                r.error(path, f'the provider is in disabled domain "{p.domain}"',
                        "enable the domain or remove the service")
                continue
            ip = names.ips.get(p.name)
            if ip is None:
                continue  # addressing failed: reported there
            for consumer, cpath in _consumers(r, names, p, v.get("consumers"),
                                              (*path, "consumers")):
                cdomain, ctype = machines[consumer]
                if ctype is InstanceType.VM:
                    r.error(cpath, f'"{consumer}" is a VM: a service proxy listens inside '
                            "containers only")
                    continue
                where = (consumer, listen)
                other = listening.get(where)
                if other is not None:
                    r.error(cpath, f'"{consumer}" already listens on {listen} for service '
                            f'"{other[0]}"', "give one of them another listen")
                    continue
                listening[where] = (str(sname), cpath)
                grants.append(ServiceGrant(
                    service=str(sname), provider=p.name, provider_domain=p.domain,
                    provider_ip=ipaddress.IPv4Address(ip), consumer=consumer,
                    consumer_domain=cdomain, port=port, socket=socket, listen=listen,
                    description=str(v["description"])))
    return tuple(grants)


def _endpoint(r: Report, p: Provider, v: Mapping[str, object], path: KeyPath
              ) -> tuple[int | None, str | None, str] | None:
    """(port, socket, consumer-side listen) of one service, or None when invalid (reported)."""
    # schema.read fills absent keys with None.
    has_port, has_socket = v.get("port") is not None, v.get("socket") is not None
    if has_port == has_socket:
        r.error(path, "needs exactly one of port and socket",
                "port: 7000 (TCP) or socket: /run/x.sock (a unix socket in the machine)")
        return None
    listen = v.get("listen")
    if has_port:
        port = _port(r, v["port"], (*path, "port"))
        lport = port if listen is None else _port(r, listen, (*path, "listen"))
        if port is None or lport is None:
            return None
        return port, None, f"127.0.0.1:{lport}"
    if p.type is InstanceType.VM:
        r.error((*path, "socket"), f'"{p.name}" is a VM: the host cannot reach a unix socket '
                "inside it", "offer a port instead")
        return None
    sock = values.abs_path(r, v["socket"], (*path, "socket"))
    lpath = sock if listen is None else values.abs_path(r, listen, (*path, "listen"))
    return None, sock, lpath


def _consumers(r: Report, names: policies.Names, p: Provider, raw: object, path: KeyPath
               ) -> list[tuple[str, KeyPath]]:
    """The consumer machines (domains expanded, in machine order), each with its key path."""
    if not isinstance(raw, list) or not raw:
        r.error(path, "must list at least one machine or domain" if raw == [] else
                f"must be a list of machines or domains, not {describe(raw)}")
        return []
    out: list[tuple[str, KeyPath]] = []
    for i, who in enumerate(raw):
        cpath: KeyPath = (*path, i)
        ep = policies.reference(r, names, who, cpath, allow_host=False)
        if ep is None:
            continue
        if ep.domain and not names.enabled.get(ep.domain, False):
            r.error(cpath, f'names disabled domain "{ep.domain}": nothing there can consume it')
            continue
        if ep.kind == "machine":
            if ep.name == p.name:
                r.error(cpath, f'"{p.name}" is the provider itself',
                        "a machine reaches its own services directly")
                continue
            picked = [ep.name]
        else:
            picked = [m for m, d in names.machines.items() if d == ep.name and m != p.name]
        out += [(m, cpath) for m in picked if m not in {c for c, _ in out}]
    return out
