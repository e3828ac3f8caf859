"""The validated infrastructure, as frozen values.

This is the contract between validation (infra.yml -> Infra) and reconciliation
(Infra -> desired Incus/nftables state). Everything here is already checked: addresses are
assigned, references resolve, defaults are filled in. Nothing in this module touches the system.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from hashlib import sha256
from types import MappingProxyType
from typing import TypeVar

from anklume import paths

IFNAME_MAX = 15  # Linux interface names (IFNAMSIZ - 1)


K = TypeVar("K")
V = TypeVar("V")


def frozen_map(d: Mapping[K, V] | None = None) -> Mapping[K, V]:
    return MappingProxyType(dict(d or {}))


def bridge_name(domain: str) -> str:
    """`net-<domain>` when it fits an interface name, else `net-<first 6>-<4 hex of sha256>`:
    deterministic, so every run and every host derives the same name."""
    plain = f"net-{domain}"
    if len(plain) <= IFNAME_MAX:
        return plain
    return f"net-{domain[:6]}-{sha256(domain.encode()).hexdigest()[:4]}"


class TrustLevel(StrEnum):
    ADMIN = "admin"
    TRUSTED = "trusted"
    SEMI_TRUSTED = "semi-trusted"
    UNTRUSTED = "untrusted"
    DISPOSABLE = "disposable"

    @property
    def zone_offset(self) -> int:
        return {"admin": 0, "trusted": 10, "semi-trusted": 20, "untrusted": 40,
                "disposable": 50}[self.value]


class InstanceType(StrEnum):
    LXC = "lxc"
    VM = "vm"

    @property
    def incus_type(self) -> str:
        return "container" if self is InstanceType.LXC else "virtual-machine"


@dataclass(frozen=True)
class Profile:
    name: str
    config: Mapping[str, str] = field(default_factory=frozen_map)
    devices: Mapping[str, Mapping[str, str]] = field(default_factory=frozen_map)


@dataclass(frozen=True)
class PersistentVolume:
    name: str
    path: str  # mount path inside the instance
    readonly: bool = False


@dataclass(frozen=True)
class SharedVolumeMount:
    """One shared volume as seen by one machine (consumers already resolved)."""
    volume: str
    source: str  # host directory
    path: str  # mount path inside the instance
    readonly: bool
    shift: bool = False
    propagate: bool = False  # also offered to instances nested inside this one


@dataclass(frozen=True)
class Machine:
    name: str
    domain: str
    ip: ipaddress.IPv4Address
    type: InstanceType = InstanceType.LXC
    os_image: str = "debian/13"
    description: str = ""
    ephemeral: bool = False
    gpu: bool = False
    profiles: tuple[str, ...] = ("default",)
    config: Mapping[str, str] = field(default_factory=frozen_map)
    devices: Mapping[str, Mapping[str, str]] = field(default_factory=frozen_map)
    boot_autostart: bool | None = None
    boot_priority: int | None = None
    snapshots_schedule: str | None = None
    snapshots_expiry: str | None = None
    persistent_data: tuple[PersistentVolume, ...] = ()
    shared_volumes: tuple[SharedVolumeMount, ...] = ()


@dataclass(frozen=True)
class Domain:
    name: str
    subnet: ipaddress.IPv4Network
    seq: int
    enabled: bool = True
    description: str = ""
    trust_level: TrustLevel = TrustLevel.SEMI_TRUSTED
    ephemeral: bool = False
    profiles: tuple[Profile, ...] = ()
    machines: tuple[Machine, ...] = ()

    @property
    def bridge(self) -> str:
        return bridge_name(self.name)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 254


@dataclass(frozen=True)
class Endpoint:
    """One side of a network policy: `host`, `lan` (a policy's `from` only), a whole domain,
    or one machine."""
    kind: str  # "host" | "lan" | "domain" | "machine"
    name: str
    domain: str | None = None  # the domain of a machine endpoint (or the domain itself)
    ip: ipaddress.IPv4Address | None = None  # machine endpoints only


@dataclass(frozen=True)
class NetworkPolicy:
    description: str
    source: Endpoint
    target: Endpoint
    ports: tuple[int, ...] | None = None  # None: all ports
    protocol: str = "tcp"
    bidirectional: bool = False


@dataclass(frozen=True)
class ServiceGrant:
    """One consumer's access to one service of a provider (a proxy device on the consumer)."""
    service: str
    provider: str
    provider_domain: str
    provider_ip: ipaddress.IPv4Address
    consumer: str
    consumer_domain: str
    port: int | None = None  # a TCP service: the provider's port
    socket: str | None = None  # a unix socket service: its path inside the provider
    listen: str = ""  # in the consumer: "127.0.0.1:PORT" or a socket path
    description: str = ""

    @property
    def device(self) -> str:
        return f"svc-{self.provider}-{self.service}"

    @property
    def provider_device(self) -> str:
        """A unix-socket service's proxy on the provider (one per service, whatever the number
        of consumers). A dot: never in a machine name, so never a consumer's device name."""
        return f"svc.{self.service}"

    @property
    def rendezvous(self) -> str:
        """Where a unix-socket service meets its consumers on the host (a hash: socket paths
        are limited to 107 bytes, names are not)."""
        key = sha256(f"{self.provider_domain}/{self.provider}/{self.service}".encode())
        return f"{paths.SERVICE_SOCKETS}/{key.hexdigest()[:24]}.sock"


@dataclass(frozen=True)
class GlobalSettings:
    base_octet: int = 10
    zone_base: int = 100
    default_os_image: str = "debian/13"
    gpu_policy: str = "exclusive"
    firewall_mode: str = "host"
    shared_volumes_base: str = "/srv/anklume/shares"
    persistent_data_base: str = "/srv/anklume/data"
    allow_privileged: bool = False  # explicit opt-in to privileged LXC containers
    # The boot unit deletes anklume's resources no longer declared only when this says so.
    prune_at_boot: bool = False


@dataclass(frozen=True)
class Infra:
    project_name: str
    settings: GlobalSettings
    domains: tuple[Domain, ...]
    policies: tuple[NetworkPolicy, ...] = ()
    schema_version: int = 1
    services: tuple[ServiceGrant, ...] = ()  # every (service, consumer) grant

    @property
    def enabled_domains(self) -> tuple[Domain, ...]:
        return tuple(d for d in self.domains if d.enabled)

    def domain(self, name: str) -> Domain:
        for d in self.domains:
            if d.name == name:
                return d
        raise KeyError(name)
