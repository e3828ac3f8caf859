"""Machines: their own keys, profiles, privilege, devices, volumes and GPU access."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from anklume.agent import containment, schema, values
from anklume.agent.model import (
    GlobalSettings,
    InstanceType,
    PersistentVolume,
    Profile,
    SharedVolumeMount,
)
from anklume.problems import KeyPath, Report, describe, format_path

MACHINE_NAME_MAX = 63
PRIVILEGED_KEY = "security.privileged"


@dataclass
class MachineSpec:
    name: str
    domain: str
    path: KeyPath
    v: dict[str, object]
    type: InstanceType = InstanceType.LXC
    config: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)
    profiles: tuple[str, ...] = ("default",)
    persistent: list[PersistentVolume] = field(default_factory=list)
    mounts: list[SharedVolumeMount] = field(default_factory=list)


def read(r: Report, settings: GlobalSettings, domain: str, domain_path: KeyPath,
         profiles: Mapping[str, Profile], name: object, raw: object,
         others: Mapping[str, MachineSpec]) -> MachineSpec | None:
    """One machine of `domain`; None when its name or mapping is unusable (reported).
    `others`: the machines read so far (names are unique across domains)."""
    path: KeyPath = (*domain_path, "machines", str(name))
    if not values.name(r, name, path, "machine", MACHINE_NAME_MAX):
        return None
    assert isinstance(name, str)
    other = others.get(name)
    if other is not None:
        where = f'domain "{other.domain}"' if other.domain != domain else "this domain"
        r.error(path, f'machine "{name}" is also defined in {where}',
                "machine names are unique across all domains")
        return None
    v = schema.read("machine", raw, path, r)
    if v is None:
        return None
    m = MachineSpec(name, domain, path, v)
    try:
        m.type = InstanceType(str(v["type"]))  # schema.read made it a string
    except ValueError:
        r.error((*path, "type"), f'unknown type "{v["type"]}"', "lxc or vm")
    if v.get("os_image") is not None:
        values.image(r, v["os_image"], (*path, "os_image"), "")
    m.config = values.string_map(r, v["config"], (*path, "config"))
    m.devices = values.devices(r, v["devices"], (*path, "devices"))
    m.profiles = _profiles(r, domain, profiles, v["profiles"], (*path, "profiles"))
    prio = v.get("boot_priority")
    if isinstance(prio, int) and not 0 <= prio <= 100:
        r.error((*path, "boot_priority"), f"{prio} is outside 0-100")
    sched = v.get("snapshots_schedule")
    if isinstance(sched, str) and not values.cron_ok(sched):
        r.error((*path, "snapshots_schedule"), f'"{sched}" is not a cron schedule',
                'five fields, e.g. "0 2 * * *" (daily at 02:00), or @daily')
    expiry = v.get("snapshots_expiry")
    if isinstance(expiry, str) and not values.EXPIRY_RE.match(expiry):
        r.error((*path, "snapshots_expiry"), f'"{expiry}" is not a duration',
                'a number and a unit d, h or m, e.g. "30d"')
    pdata = v["persistent_data"]
    assert isinstance(pdata, Mapping)
    for vol, vraw in pdata.items():
        vpath: KeyPath = (*path, "persistent_data", str(vol))
        if not values.item(r, vol, vpath, "volume"):
            continue
        assert isinstance(vol, str)
        pv = schema.read("persistent_volume", vraw, vpath, r)
        if pv is None or "path" not in pv:
            continue
        mount = values.abs_path(r, pv["path"], (*vpath, "path"))
        m.persistent.append(PersistentVolume(vol, mount, bool(pv["readonly"])))
    if m.type is InstanceType.LXC and not settings.allow_privileged:
        _privileged(r, profiles, m)
    return m


def _profiles(r: Report, domain: str, profiles: Mapping[str, Profile], raw: object,
              path: KeyPath) -> tuple[str, ...]:
    out: list[str] = []
    assert isinstance(raw, list)
    for i, p in enumerate(raw):
        if not isinstance(p, str):
            r.error((*path, i), f"must be a profile name, not {describe(p)}")
        elif p in out:
            r.error((*path, i), f'profile "{p}" is listed twice')
        elif p != "default" and p not in profiles:
            r.error((*path, i), f'no profile "{p}" in domain "{domain}"',
                    schema.suggest(p, ["default", *profiles])
                    or f"define it under domains.{domain}.profiles")
        else:
            out.append(p)
    return tuple(out)


def _privileged(r: Report, profiles: Mapping[str, Profile], m: MachineSpec) -> None:
    # As Incus resolves it: the instance's own key wins, else the last profile setting it.
    hint = "use type: vm, or opt in with global.allow_privileged: true"
    if PRIVILEGED_KEY in m.config:
        if values.is_true(m.config[PRIVILEGED_KEY]):
            r.error((*m.path, "config", PRIVILEGED_KEY),
                    "a privileged LXC container shares root with the host", hint)
        return
    setters = [p for p in m.profiles if p in profiles and PRIVILEGED_KEY in profiles[p].config]
    if setters and values.is_true(profiles[setters[-1]].config[PRIVILEGED_KEY]):
        r.error((*m.path, "profiles"), f'profile "{setters[-1]}" makes this LXC '
                "container privileged: it would share root with the host", hint)


def check_devices(r: Report, m: MachineSpec, domain_path: KeyPath,
                  profiles: Mapping[str, Profile]) -> None:
    """Two devices mounting on one path, or a device name taken twice, is an error."""
    devices: dict[str, tuple[str | None, KeyPath]] = {}
    for p in m.profiles:  # a machine device overrides a profile device of the same name
        prof = profiles.get(p)
        for dev, conf in (prof.devices.items() if prof else ()):
            devices[dev] = (values.disk_path(conf), (*domain_path, "profiles", p, "devices", dev))
    for dev, conf in m.devices.items():
        devices[dev] = (values.disk_path(conf), (*m.path, "devices", dev))
    for dev, (_, path) in devices.items():
        # The agent names the proxy devices of services: grants svc-<provider>-<service>.
        if dev.startswith(("svc-", "svc.")):
            r.error(path, f'device name "{dev}": the prefix {dev[:4]} is reserved for the '
                    "proxy devices of services: grants", "rename the device")
    generated = [(f"pd-{pv.name}", pv.path, (*m.path, "persistent_data", pv.name))
                 for pv in m.persistent]
    generated += [(f"sv-{sv.volume}", sv.path, ("shared_volumes", sv.volume))
                  for sv in m.mounts]
    for dev, mount, path in generated:
        if dev in devices:
            r.error(path, f'device name "{dev}" is already used on machine '
                    f'"{m.name}" (at {format_path(devices[dev][1])})',
                    "rename the device or the volume")
            continue
        devices[dev] = (mount, path)
    by_mount: dict[str, str] = {}
    for dev, (where, path) in devices.items():
        if where is None:
            continue
        mount = posixpath.normpath(where)
        other = by_mount.get(mount)
        if other is not None:
            r.error(path, f'mount path {mount} of machine "{m.name}" is used by both '
                    f'devices "{other}" and "{dev}"', "give each one its own path")
            continue
        by_mount[mount] = dev


def check_containment(r: Report, m: MachineSpec, domain_path: KeyPath,
                      profiles: Mapping[str, Profile], roots: Sequence[str]) -> None:
    """The machine's effective config keys and devices (profiles first, its own last) against
    agent/containment.py's lists and its `unsafe:` opt-ins."""
    config: list[tuple[str, KeyPath]] = []
    devices: list[tuple[Mapping[str, str], KeyPath]] = []
    for p in m.profiles:
        prof = profiles.get(p)
        if prof is None:
            continue
        ppath: KeyPath = (*domain_path, "profiles", p)
        config += [(k, (*ppath, "config", k)) for k in prof.config]
        devices += [(c, (*ppath, "devices", d)) for d, c in prof.devices.items()]
    config += [(k, (*m.path, "config", k)) for k in m.config]
    devices += [(c, (*m.path, "devices", d)) for d, c in m.devices.items()]
    unsafe = m.v.get("unsafe") or []
    assert isinstance(unsafe, list)
    names = []
    for i, cap in enumerate(unsafe):
        if isinstance(cap, str) and cap:
            names.append(cap)
        else:
            r.error((*m.path, "unsafe", i), "must be the name of a capability or config key")
    containment.check(r, m.name, names, containment.uses(config, devices, roots),
                      (*m.path, "unsafe"))


def has_gpu(m: MachineSpec, profiles: Mapping[str, Profile]) -> bool:
    devices: list[Mapping[str, str]] = [*m.devices.values()]
    for p in m.profiles:
        if p in profiles:
            devices += profiles[p].devices.values()
    return bool(m.v["gpu"]) or any(dev.get("type") == "gpu" for dev in devices)


def check_gpus(r: Report, gpu_policy: str, users: Sequence[MachineSpec]) -> None:
    """`users`: the machines of enabled domains with GPU access, domains by name."""
    if len(users) <= 1:
        return
    names = ", ".join(m.name for m in users)
    if gpu_policy == "exclusive":
        for m in users[1:]:
            r.error((*m.path, "gpu"), f'GPU access is already given to "{users[0].name}"'
                    f" (machines with a GPU: {names})",
                    "global.gpu_policy: exclusive allows one; set it to shared to "
                    "let them share")
    else:
        r.warn(("global", "gpu_policy"), f"several machines share the GPU: {names}")


def check_nics(r: Report, devices: Mapping[str, Mapping[str, str]], path: KeyPath, own: str,
               others: set[str]) -> None:
    """eth0 is anklume's (the static IP on the domain's bridge), and a NIC on another domain's
    bridge would join that domain: both would bypass the addressing and the isolation."""
    for dev, conf in devices.items():
        if dev == "eth0" or (conf.get("type") == "nic" and conf.get("name") == "eth0"):
            r.error((*path, dev), "eth0 is managed by anklume (the static IP on bridge "
                    f"{own})", "remove this device; the address is set with the machine's ip")
            continue
        if conf.get("type") != "nic":
            continue
        net = conf.get("network") or conf.get("parent")
        if net in others:
            r.error((*path, dev), f"a NIC on {net}, another domain's bridge, would bypass the "
                    "isolation between domains",
                    "let the domains talk through network_policies instead")
