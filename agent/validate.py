"""Validate infra.yml into the frozen Infra model: every rule, every problem reported at once.

Public API:

    load(path) -> Infra
        Read and validate PATH (infra.yml, an infra/ directory, or None for the embedded
        default). Raises ValidationError (exit code 2) whose `.problems` lists every error;
        warnings are logged at WARNING level on the `anklume.agent.validate` logger.
    load_with_warnings(path) -> (Infra, [Problem])
        The same, returning the warnings instead of logging them (the CLI prints them).
    validate(data, locator=None) -> (Infra, [Problem])
        Validate an already parsed document (tests, other front ends).

Decisions the reconciler can rely on: domains are sorted by name (so the file and directory
forms give equal values); machines keep their declaration order; a policy naming a disabled
domain (or a machine in one) is left out of Infra.policies, with a warning.
"""

from __future__ import annotations

import ipaddress
import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from anklume.agent import addressing, loader, policies, schema, values
from anklume.agent.model import (
    Domain,
    GlobalSettings,
    Infra,
    InstanceType,
    Machine,
    NetworkPolicy,
    PersistentVolume,
    Profile,
    SharedVolumeMount,
    TrustLevel,
    frozen_map,
)
from anklume.agent.problems import (
    KeyPath,
    Locator,
    Problem,
    Report,
    ValidationError,
    describe,
    format_path,
)

__all__ = ["Problem", "ValidationError", "load", "load_with_warnings", "validate"]

_log = logging.getLogger("anklume.agent.validate")

SCHEMA_VERSION = 1
DOMAIN_NAME_MAX = 11  # "net-" + name must fit Linux's 15-character interface names
MACHINE_NAME_MAX = 63
PRIVILEGED_KEY = "security.privileged"

def load(path: Path | None = None) -> Infra:
    """Read and validate PATH (None: the embedded default); warnings are logged."""
    infra, warnings = load_with_warnings(path)
    for w in warnings:
        _log.warning("%s", w)
    return infra


def load_with_warnings(path: Path | None = None) -> tuple[Infra, list[Problem]]:
    """Read and validate PATH; return the Infra and the warnings (never raises on them)."""
    source = loader.read(path)
    return validate(source.data, source.locator)


def validate(data: object, locator: Locator | None = None) -> tuple[Infra, list[Problem]]:
    """Validate a parsed document; raise ValidationError listing every error."""
    report = Report(locator)
    infra = _Validator(report).run(data)
    report.raise_if_errors()
    assert infra is not None  # no errors means everything was built
    return infra, report.warnings


@dataclass
class _MachineSpec:
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


@dataclass
class _DomainSpec:
    name: str
    path: KeyPath
    v: dict[str, object]
    trust: TrustLevel = TrustLevel.SEMI_TRUSTED
    addr_ok: bool = True  # bad trust level or subnet_id: no subnet, skip its addressing checks
    profiles: dict[str, Profile] = field(default_factory=dict)
    machines: list[_MachineSpec] = field(default_factory=list)


class _Validator:
    def __init__(self, report: Report) -> None:
        self.r = report
        self.settings = GlobalSettings()
        self.domains: dict[str, _DomainSpec] = {}
        self.machines: dict[str, _MachineSpec] = {}
        self.subnets: dict[str, tuple[int, ipaddress.IPv4Network]] = {}
        self.ips: dict[str, ipaddress.IPv4Address] = {}
        self.addressing_ok = True  # bad addressing settings: no subnet can be computed

    # -- document ---------------------------------------------------------------------------

    def run(self, data: object) -> Infra | None:
        if data is None:
            self.r.error((), "the document is empty",
                         "it needs at least project_name, global and domains")
            return None
        top = schema.read("top", data, (), self.r)
        if top is None:
            return None
        version = top["schema_version"]
        assert isinstance(version, int)
        if version > SCHEMA_VERSION:
            self.r.error(("schema_version",), f"version {version} is newer than this anklume "
                         f"understands ({SCHEMA_VERSION})", "update anklume")
        elif version < 1:
            self.r.error(("schema_version",), "must be 1 or more")
        name = top.get("project_name")
        if isinstance(name, str) and not name.strip():
            self.r.error(("project_name",), "must not be empty")
        legacy_base = self._global(top.get("global"))
        self._domains(top.get("domains"))
        self._addresses(legacy_base)
        self._shared_volumes(top["shared_volumes"])
        for m in self.machines.values():
            self._machine_devices(m)
        self._gpus()
        nets = top["network_policies"]
        assert isinstance(nets, list)
        flows = policies.resolve(self.r, self._names(), nets)
        if self.r.errors:
            return None
        return self._build(str(name), flows, version)

    def _names(self) -> policies.Names:
        return policies.Names({d.name: bool(d.v["enabled"]) for d in self.domains.values()},
                              {m.name: m.domain for m in self.machines.values()}, self.ips)

    # -- global -----------------------------------------------------------------------------

    def _global(self, raw: object) -> str | None:
        path: KeyPath = ("global",)
        if raw is None:
            return None  # missing: schema.read reported it
        g = schema.read("global", raw, path, self.r)
        if g is None:
            return None
        a = schema.read("addressing", g["addressing"], (*path, "addressing"), self.r) or {}
        base_octet = a.get("base_octet", 10)
        if base_octet != 10:
            self.r.error((*path, "addressing", "base_octet"), "must be 10",
                         "anklume uses 10.0.0.0/8 (RFC 1918) for its domains")
        zone_base = a.get("zone_base", 100)
        assert isinstance(zone_base, int)
        if not 0 <= zone_base <= 255 - 50:
            self.addressing_ok = False
            self.r.error((*path, "addressing", "zone_base"), f"{zone_base} is out of range",
                         "zone_base + 50 (the disposable zone) must stay within 0-255")
        legacy_base = g.get("base_subnet")
        if isinstance(legacy_base, str):
            if addressing.parse_legacy_base(legacy_base) is None:
                self.addressing_ok = False
                self.r.error((*path, "base_subnet"), f'"{legacy_base}" is not two octets',
                             'e.g. "10.100"')
            if isinstance(raw, Mapping) and raw.get("addressing") is not None:
                self.r.error((*path, "base_subnet"), "cannot be combined with addressing",
                             "keep addressing (subnets by trust level) or base_subnet (legacy)")
        r = self.r
        image = values.image(r, g["default_os_image"], (*path, "default_os_image"),
                             GlobalSettings.default_os_image)
        gpu_policy = values.choice(r, g["gpu_policy"], ("exclusive", "shared"),
                                   (*path, "gpu_policy"))
        firewall = values.choice(r, g["firewall_mode"], ("host", "vm"), (*path, "firewall_mode"))
        sv_base = values.abs_path(r, g["shared_volumes_base"], (*path, "shared_volumes_base"))
        pd_base = values.abs_path(r, g["persistent_data_base"], (*path, "persistent_data_base"))
        self.settings = GlobalSettings(
            base_octet=10, zone_base=zone_base, default_os_image=image,
            gpu_policy=gpu_policy, firewall_mode=firewall, shared_volumes_base=sv_base,
            persistent_data_base=pd_base, allow_privileged=bool(g["allow_privileged"]))
        return legacy_base if isinstance(legacy_base, str) else None

    # -- domains and machines -----------------------------------------------------------------

    def _domains(self, raw: object) -> None:
        if raw is None:
            return
        if not isinstance(raw, Mapping):
            return  # schema.read reported it
        for name, draw in raw.items():
            path: KeyPath = ("domains", str(name))
            if not values.name(self.r, name, path, "domain", DOMAIN_NAME_MAX):
                continue
            v = schema.read("domain", draw, path, self.r)
            if v is None:
                continue
            d = _DomainSpec(name, path, v)
            self.domains[name] = d
            trust = v["trust_level"]
            try:
                d.trust = TrustLevel(trust)
            except ValueError:
                d.addr_ok = False
                self.r.error((*path, "trust_level"), f'unknown trust level "{trust}"',
                             schema.suggest(str(trust), [t.value for t in TrustLevel])
                             or "one of: " + ", ".join(t.value for t in TrustLevel))
            sid = v.get("subnet_id")
            if isinstance(sid, int) and not 0 <= sid <= addressing.MAX_SEQ:
                self.r.error((*path, "subnet_id"), f"{sid} is outside 0-{addressing.MAX_SEQ}")
                d.addr_ok = False
            profiles = v["profiles"]
            assert isinstance(profiles, Mapping)
            for pname, praw in profiles.items():
                self._profile(d, pname, praw)
            machines = v["machines"]
            assert isinstance(machines, Mapping)
            for mname, mraw in machines.items():
                self._machine(d, mname, mraw)

    def _profile(self, d: _DomainSpec, name: object, raw: object) -> None:
        path: KeyPath = (*d.path, "profiles", str(name))
        if not values.item(self.r, name, path, "profile"):
            return
        assert isinstance(name, str)
        if name == "default":
            self.r.error(path, 'the "default" profile is managed by anklume',
                         "give your profile another name and list it in the machines' profiles")
            return
        v = schema.read("profile", raw, path, self.r)
        if v is None:
            return
        d.profiles[name] = Profile(
            name, frozen_map(values.string_map(self.r, v["config"], (*path, "config"))),
            frozen_map(values.devices(self.r, v["devices"], (*path, "devices"))))

    def _machine(self, d: _DomainSpec, name: object, raw: object) -> None:
        path: KeyPath = (*d.path, "machines", str(name))
        if not values.name(self.r, name, path, "machine", MACHINE_NAME_MAX):
            return
        assert isinstance(name, str)
        other = self.machines.get(name)
        if other is not None:
            where = f'domain "{other.domain}"' if other.domain != d.name else "this domain"
            self.r.error(path, f'machine "{name}" is also defined in {where}',
                         "machine names are unique across all domains")
            return
        v = schema.read("machine", raw, path, self.r)
        if v is None:
            return
        m = _MachineSpec(name, d.name, path, v)
        self.machines[name] = m
        d.machines.append(m)
        try:
            m.type = InstanceType(v["type"])
        except ValueError:
            self.r.error((*path, "type"), f'unknown type "{v["type"]}"', "lxc or vm")
        if v.get("os_image") is not None:
            values.image(self.r, v["os_image"], (*path, "os_image"), "")
        m.config = values.string_map(self.r, v["config"], (*path, "config"))
        m.devices = values.devices(self.r, v["devices"], (*path, "devices"))
        m.profiles = self._machine_profiles(d, v["profiles"], (*path, "profiles"))
        prio = v.get("boot_priority")
        if isinstance(prio, int) and not 0 <= prio <= 100:
            self.r.error((*path, "boot_priority"), f"{prio} is outside 0-100")
        sched = v.get("snapshots_schedule")
        if isinstance(sched, str) and not values.cron_ok(sched):
            self.r.error((*path, "snapshots_schedule"), f'"{sched}" is not a cron schedule',
                         'five fields, e.g. "0 2 * * *" (daily at 02:00), or @daily')
        expiry = v.get("snapshots_expiry")
        if isinstance(expiry, str) and not values.EXPIRY_RE.match(expiry):
            self.r.error((*path, "snapshots_expiry"), f'"{expiry}" is not a duration',
                         'a number and a unit d, h or m, e.g. "30d"')
        pdata = v["persistent_data"]
        assert isinstance(pdata, Mapping)
        for vol, vraw in pdata.items():
            vpath: KeyPath = (*path, "persistent_data", str(vol))
            if not values.item(self.r, vol, vpath, "volume"):
                continue
            assert isinstance(vol, str)
            pv = schema.read("persistent_volume", vraw, vpath, self.r)
            if pv is None or "path" not in pv:
                continue
            mount = values.abs_path(self.r, pv["path"], (*vpath, "path"))
            m.persistent.append(PersistentVolume(vol, mount, bool(pv["readonly"])))
        if m.type is InstanceType.LXC and not self.settings.allow_privileged:
            self._privileged(d, m)

    def _machine_profiles(self, d: _DomainSpec, raw: object, path: KeyPath) -> tuple[str, ...]:
        out: list[str] = []
        assert isinstance(raw, list)
        for i, p in enumerate(raw):
            if not isinstance(p, str):
                self.r.error((*path, i), f"must be a profile name, not {describe(p)}")
            elif p in out:
                self.r.error((*path, i), f'profile "{p}" is listed twice')
            elif p != "default" and p not in d.profiles:
                self.r.error((*path, i), f'no profile "{p}" in domain "{d.name}"',
                             schema.suggest(p, ["default", *d.profiles])
                             or f"define it under domains.{d.name}.profiles")
            else:
                out.append(p)
        return tuple(out)

    def _privileged(self, d: _DomainSpec, m: _MachineSpec) -> None:
        # As Incus resolves it: the instance's own key wins, else the last profile setting it.
        hint = "use type: vm, or opt in with global.allow_privileged: true"
        if PRIVILEGED_KEY in m.config:
            if values.is_true(m.config[PRIVILEGED_KEY]):
                self.r.error((*m.path, "config", PRIVILEGED_KEY),
                             "a privileged LXC container shares root with the host", hint)
            return
        setters = [p for p in m.profiles if p in d.profiles
                   and PRIVILEGED_KEY in d.profiles[p].config]
        if setters and values.is_true(d.profiles[setters[-1]].config[PRIVILEGED_KEY]):
            self.r.error((*m.path, "profiles"), f'profile "{setters[-1]}" makes this LXC '
                         "container privileged: it would share root with the host", hint)

    # -- addressing -----------------------------------------------------------------------------

    def _addresses(self, legacy_base: str | None) -> None:
        if not self.addressing_ok:
            return
        reqs = [addressing.DomainRequest(d.name, d.trust, _int_or_none(d.v.get("subnet_id")))
                for d in self.domains.values() if d.addr_ok]
        self.subnets = addressing.assign_subnets(
            reqs, self.settings.zone_base, 10, legacy_base, report=self.r)
        for d in self.domains.values():
            if d.name not in self.subnets:
                continue
            reqs_m = [addressing.MachineRequest(m.name, _str_or_none(m.v.get("ip")))
                      for m in d.machines]
            self.ips.update(addressing.assign_ips(d.name, self.subnets[d.name][1], reqs_m,
                                                  report=self.r))

    # -- shared volumes and devices -------------------------------------------------------------

    def _shared_volumes(self, raw: object) -> None:
        assert isinstance(raw, Mapping)
        for name, vraw in raw.items():
            path: KeyPath = ("shared_volumes", str(name))
            if not values.item(self.r, name, path, "shared volume"):
                continue
            assert isinstance(name, str)
            v = schema.read("shared_volume", vraw, path, self.r)
            if v is None:
                continue
            source = values.abs_path(self.r, v.get("source") or
                                    posixpath.join(self.settings.shared_volumes_base, name),
                                    (*path, "source"))
            mount = values.abs_path(self.r, v.get("path") or f"/shared/{name}", (*path, "path"))
            consumers = v["consumers"]
            assert isinstance(consumers, Mapping)
            if not consumers:
                self.r.warn((*path, "consumers"), "no consumers: the volume is mounted nowhere")
            modes: dict[str, str] = {}
            names = self._names()
            for who, mode in consumers.items():
                cpath: KeyPath = (*path, "consumers", str(who))
                if mode not in ("ro", "rw"):
                    self.r.error(cpath, f"must be ro or rw, not {values.show(mode)}")
                    continue
                if policies.reference(self.r, names, who, cpath, allow_host=False):
                    modes[str(who)] = mode
            for m in self.machines.values():
                mode = modes.get(m.name) or modes.get(m.domain)  # a machine entry wins
                if mode:
                    m.mounts.append(SharedVolumeMount(
                        name, source, mount, readonly=mode == "ro", shift=bool(v["shift"]),
                        propagate=bool(v["propagate"])))

    def _machine_devices(self, m: _MachineSpec) -> None:
        """Two devices mounting on one path, or a device name taken twice, is an error."""
        d = self.domains[m.domain]
        devices: dict[str, tuple[str | None, KeyPath]] = {}
        for p in m.profiles:  # a machine device overrides a profile device of the same name
            prof = d.profiles.get(p)
            for dev, conf in (prof.devices.items() if prof else ()):
                devices[dev] = (values.disk_path(conf), (*d.path, "profiles", p, "devices", dev))
        for dev, conf in m.devices.items():
            devices[dev] = (values.disk_path(conf), (*m.path, "devices", dev))
        generated = [(f"pd-{pv.name}", pv.path, (*m.path, "persistent_data", pv.name))
                     for pv in m.persistent]
        generated += [(f"sv-{sv.volume}", sv.path, ("shared_volumes", sv.volume))
                      for sv in m.mounts]
        for dev, mount, path in generated:
            if dev in devices:
                self.r.error(path, f'device name "{dev}" is already used on machine '
                             f'"{m.name}" (at {format_path(devices[dev][1])})',
                             "rename the device or the volume")
                continue
            devices[dev] = (mount, path)
        by_mount: dict[str, str] = {}
        for dev, (mount, path) in devices.items():
            if mount is None:
                continue
            mount = posixpath.normpath(mount)
            other = by_mount.get(mount)
            if other is not None:
                self.r.error(path, f'mount path {mount} of machine "{m.name}" is used by both '
                             f'devices "{other}" and "{dev}"', "give each one its own path")
                continue
            by_mount[mount] = dev

    def _gpus(self) -> None:
        # Domains by name, like Infra.domains: both forms of a config report alike.
        users = [m for d in sorted(self.domains.values(), key=lambda d: d.name)
                 if d.v["enabled"]
                 for m in d.machines if self._has_gpu(d, m)]
        if len(users) <= 1:
            return
        names = ", ".join(m.name for m in users)
        if self.settings.gpu_policy == "exclusive":
            for m in users[1:]:
                self.r.error((*m.path, "gpu"), f'GPU access is already given to "{users[0].name}"'
                             f" (machines with a GPU: {names})",
                             "global.gpu_policy: exclusive allows one; set it to shared to "
                             "let them share")
        else:
            self.r.warn(("global", "gpu_policy"), f"several machines share the GPU: {names}")

    @staticmethod
    def _has_gpu(d: _DomainSpec, m: _MachineSpec) -> bool:
        devices = [*m.devices.values()]
        for p in m.profiles:
            if p in d.profiles:
                devices += d.profiles[p].devices.values()
        return bool(m.v["gpu"]) or any(dev.get("type") == "gpu" for dev in devices)

    # -- building -------------------------------------------------------------------------------

    def _build(self, project: str, flows: list[NetworkPolicy], version: int) -> Infra:
        domains = []
        for d in sorted(self.domains.values(), key=lambda d: d.name):
            seq, subnet = self.subnets[d.name]
            machines = tuple(self._build_machine(d, m) for m in d.machines)
            domains.append(Domain(
                name=d.name, subnet=subnet, seq=seq, enabled=bool(d.v["enabled"]),
                description=str(d.v["description"]), trust_level=d.trust,
                ephemeral=bool(d.v["ephemeral"]), profiles=tuple(d.profiles.values()),
                machines=machines))
        return Infra(project, self.settings, tuple(domains), tuple(flows), version)

    def _build_machine(self, d: _DomainSpec, m: _MachineSpec) -> Machine:
        v = m.v
        eph = v.get("ephemeral")
        return Machine(
            name=m.name, domain=d.name, ip=self.ips[m.name], type=m.type,
            os_image=str(v.get("os_image") or self.settings.default_os_image),
            description=str(v["description"]),
            ephemeral=bool(d.v["ephemeral"] if eph is None else eph), gpu=bool(v["gpu"]),
            profiles=m.profiles, config=frozen_map(m.config),
            devices=frozen_map({k: frozen_map(c) for k, c in m.devices.items()}),
            boot_autostart=_bool_or_none(v.get("boot_autostart")),
            boot_priority=_int_or_none(v.get("boot_priority")),
            snapshots_schedule=_str_or_none(v.get("snapshots_schedule")),
            snapshots_expiry=_str_or_none(v.get("snapshots_expiry")),
            persistent_data=tuple(m.persistent), shared_volumes=tuple(m.mounts))


def _int_or_none(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str_or_none(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _bool_or_none(v: object) -> bool | None:
    return v if isinstance(v, bool) else None
