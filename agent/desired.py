"""Infra -> the Incus resources it should produce (pure: reads nothing, changes nothing).

See the notes' "Mapping onto Incus": one project per enabled domain, one bridge per domain in
the default project, the project's default profile wiring root disk + eth0 to that bridge,
domain profiles, and one instance per machine with its static IP as a DHCP reservation.
"""

from __future__ import annotations

from collections.abc import Mapping

from anklume.agent import nft_rules
from anklume.agent.model import Domain, Infra, InstanceType, Machine, ServiceGrant, frozen_map
from anklume.agent.resources import (
    IMAGE_KEY,
    OWNER_KEY,
    PROTECT_KEY,
    Kind,
    Resource,
    State,
)

STORAGE_POOL = "default"
_MODEL_DEFAULT = Machine.__dataclass_fields__["os_image"].default


def _str(v: object) -> str:
    # Incus config values are strings; YAML may hand us bools and ints.
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _strmap(d: Mapping[str, object]) -> dict[str, str]:
    return {k: _str(v) for k, v in d.items()}


def _devices(d: Mapping[str, Mapping[str, object]]) -> dict[str, Mapping[str, str]]:
    return {name: frozen_map(_strmap(dev)) for name, dev in d.items()}


def project(domain: Domain, owner: str) -> Resource:
    return Resource(
        kind=Kind.PROJECT, name=domain.name, description=domain.description,
        # features.images=false: a project with its own image store cannot see the images of
        # the default project, so instances could not be created from them.
        config=frozen_map({"features.images": "false", "features.profiles": "true",
                           OWNER_KEY: owner}),
    )


def network(domain: Domain, owner: str) -> Resource:
    net = domain.subnet.network_address
    return Resource(
        kind=Kind.NETWORK, name=domain.bridge, project="default",
        description=f"anklume domain {domain.name}",
        config=frozen_map({
            # Always explicit: letting Incus pick ("auto") probes foreign subnets.
            "ipv4.address": f"{domain.gateway}/{domain.subnet.prefixlen}",
            "ipv4.nat": "true",
            "ipv6.address": "none",
            "ipv4.dhcp.ranges": f"{net + 100}-{net + 199}",
            OWNER_KEY: owner,
        }),
    )


def _eth0(domain: Domain) -> dict[str, str]:
    return {"type": "nic", "name": "eth0", "network": domain.bridge}


def default_profile(domain: Domain, pool: str) -> Resource:
    # Owned through its project (Incus creates it with the project and deletes it with it), so
    # it carries no marker of its own.
    return Resource(
        kind=Kind.PROFILE, name="default", project=domain.name,
        description=f"anklume: root disk and eth0 on {domain.bridge}",
        devices=frozen_map({
            "root": frozen_map({"type": "disk", "path": "/", "pool": pool}),
            "eth0": frozen_map(_eth0(domain)),
        }),
    )


def domain_profiles(domain: Domain, owner: str) -> list[Resource]:
    return [
        Resource(kind=Kind.PROFILE, name=p.name, project=domain.name,
                 config=frozen_map({**_strmap(p.config), OWNER_KEY: owner}),
                 devices=frozen_map(_devices(p.devices)))
        for p in domain.profiles
    ]


def proxy(g: ServiceGrant) -> dict[str, str]:
    """The consumer's proxy device for one grant (agent/services.py): bind=instance listens
    inside the consumer; Incus's forkproxy then connects from the host, which reaches a TCP
    service at the provider's static IP (nft_rules opens exactly that) and a unix socket at the
    grant's host end (provider_proxy)."""
    if g.port is not None:
        return {"type": "proxy", "bind": "instance", "listen": f"tcp:{g.listen}",
                "connect": f"tcp:{g.provider_ip}:{g.port}"}
    return {"type": "proxy", "bind": "instance", "listen": f"unix:{g.listen}",
            "connect": f"unix:{g.rendezvous}"}


def provider_proxy(g: ServiceGrant) -> dict[str, str]:
    """The provider's side of a unix-socket grant: bind=host listens at the grant's host end
    (root only) and connects to the socket *inside the provider's namespaces*. Connecting from
    the host through the provider's root file system instead let the provider swap its socket
    for a symlink to any host socket (the Incus API) and hand that to its consumers (#20)."""
    assert g.socket is not None
    return {"type": "proxy", "bind": "host", "listen": f"unix:{g.rendezvous}",
            "connect": f"unix:{g.socket}", "mode": "0600"}


def instance(infra: Infra, domain: Domain, m: Machine, image: str) -> Resource:
    s = infra.settings
    config: dict[str, str] = {}
    if not m.ephemeral:
        config[PROTECT_KEY] = "true"
    if m.boot_autostart is not None:
        config["boot.autostart"] = _str(m.boot_autostart)
    if m.boot_priority is not None:
        # Incus names it boot.autostart.priority (a bare boot.priority is rejected).
        config["boot.autostart.priority"] = str(m.boot_priority)
    if m.snapshots_schedule:
        config["snapshots.schedule"] = m.snapshots_schedule
    if m.snapshots_expiry:
        config["snapshots.expiry"] = m.snapshots_expiry
    config.update(_strmap(m.config))
    config[OWNER_KEY] = infra.project_name
    config[IMAGE_KEY] = image

    # eth0 comes from the project's default profile; overriding it here (same keys + address)
    # turns the machine's IP into a DHCP reservation in Incus's dnsmasq. The bridge port then
    # drops frames and ARP/IPv4 from any other MAC or address (Incus's NIC filtering): policies
    # match a machine by its static IP, so a neighbour taking that IP must not get its grants.
    devices: dict[str, Mapping[str, str]] = {
        "eth0": frozen_map({**_eth0(domain), "ipv4.address": str(m.ip),
                            "security.mac_filtering": "true",
                            "security.ipv4_filtering": "true"}),
    }
    if m.gpu:
        devices["gpu"] = frozen_map({"type": "gpu"})
    # An unprivileged container's root is an unmapped uid on the host: without an idmapped
    # mount (shift) it cannot write to the host directories anklume creates as root.
    lxc = m.type is InstanceType.LXC
    for sv in m.shared_volumes:
        dev = {"type": "disk", "source": sv.source, "path": sv.path}
        if sv.readonly:
            dev["readonly"] = "true"
        if sv.shift or lxc:
            dev["shift"] = "true"
        if sv.propagate and lxc:
            # Mounts made under the source on the host later also appear inside (one way).
            dev["propagation"] = "rslave"
        devices[f"sv-{sv.volume}"] = frozen_map(dev)
    for pv in m.persistent_data:
        dev = {"type": "disk", "path": pv.path,
               "source": f"{s.persistent_data_base}/{domain.name}/{m.name}/{pv.name}"}
        if pv.readonly:
            dev["readonly"] = "true"
        if lxc:
            dev["shift"] = "true"
        devices[f"pd-{pv.name}"] = frozen_map(dev)
    for g in infra.services:
        if g.consumer == m.name:
            devices[g.device] = frozen_map(proxy(g))
        if g.provider == m.name and g.socket is not None:  # the same for each consumer
            devices[g.provider_device] = frozen_map(provider_proxy(g))
    devices.update(_devices(m.devices))

    return Resource(
        kind=Kind.INSTANCE, name=m.name, project=domain.name, description=m.description,
        config=frozen_map(config), devices=frozen_map(devices), profiles=tuple(m.profiles),
        instance_type=m.type.incus_type, image=image,
    )


def desired(infra: Infra, *, default_image: str | None = None,
            pool: str = STORAGE_POOL) -> State:
    """All Incus resources `infra` declares, and its firewall table. `default_image` replaces
    the global default OS image (offline appliances, tests) for machines that did not name
    their own."""
    owner = infra.project_name
    out: list[Resource] = []
    for d in infra.enabled_domains:
        out += [project(d, owner), network(d, owner), default_profile(d, pool)]
        out += domain_profiles(d, owner)
        for m in d.machines:
            # The model has the global default already filled in (or the model's own default):
            # a machine still carrying it did not choose its own image.
            image = m.os_image
            if default_image and image in ("", infra.settings.default_os_image, _MODEL_DEFAULT):
                image = default_image
            out.append(instance(infra, d, m, image or infra.settings.default_os_image))
    return State.of(out, owner=owner, firewall=nft_rules.firewall(infra))
