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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from anklume.agent import addressing, loader, schema
from anklume.agent.model import (
    Domain,
    Endpoint,
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
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
DOMAIN_NAME_MAX = 11  # "net-" + name must fit Linux's 15-character interface names
MACHINE_NAME_MAX = 63
# Incus device/volume/profile names: keep them to what is safe in paths and device keys.
ITEM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# An image alias (`debian/13`) or fingerprint, optionally behind a remote (`images:debian/13`).
IMAGE_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*:)?[A-Za-z0-9][A-Za-z0-9._/+-]*$")
CRON_FIELD_RE = re.compile(r"^[0-9A-Za-z*?/,-]+$")
CRON_ALIASES = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}
EXPIRY_RE = re.compile(r"^\d+[dhm]$")
# The words Incus itself reads as true for a boolean config key.
TRUE_WORDS = {"true", "1", "yes", "on"}
HOST = "host"  # the policy keyword for the appliance itself
PRIVILEGED_KEY = "security.privileged"
# YAML reads `no`, `on`, `1234` or `2024-01-01` as booleans, numbers or dates, not names.
QUOTE_HINT = 'put it in quotes ("...") so YAML reads it as text'


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
        policies = self._policies(top["network_policies"])
        if self.r.errors:
            return None
        return self._build(str(name), policies, version)

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
        image = self._image(g["default_os_image"], (*path, "default_os_image"))
        gpu_policy = self._choice(g["gpu_policy"], ("exclusive", "shared"),
                                  (*path, "gpu_policy"))
        firewall = self._choice(g["firewall_mode"], ("host", "vm"), (*path, "firewall_mode"))
        sv_base = self._abs_path(g["shared_volumes_base"], (*path, "shared_volumes_base"))
        pd_base = self._abs_path(g["persistent_data_base"], (*path, "persistent_data_base"))
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
            if not self._name(name, path, "domain", DOMAIN_NAME_MAX):
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
        if not isinstance(name, str) or not ITEM_RE.match(name):
            self.r.error(path, "profile names are letters, digits, '.', '_' and '-'")
            return
        if name == "default":
            self.r.error(path, 'the "default" profile is managed by anklume',
                         "give your profile another name and list it in the machines' profiles")
            return
        v = schema.read("profile", raw, path, self.r)
        if v is None:
            return
        d.profiles[name] = Profile(
            name, frozen_map(self._string_map(v["config"], (*path, "config"))),
            frozen_map(self._devices(v["devices"], (*path, "devices"))))

    def _machine(self, d: _DomainSpec, name: object, raw: object) -> None:
        path: KeyPath = (*d.path, "machines", str(name))
        if not self._name(name, path, "machine", MACHINE_NAME_MAX):
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
            self._image(v["os_image"], (*path, "os_image"))
        m.config = self._string_map(v["config"], (*path, "config"))
        m.devices = self._devices(v["devices"], (*path, "devices"))
        m.profiles = self._machine_profiles(d, v["profiles"], (*path, "profiles"))
        prio = v.get("boot_priority")
        if isinstance(prio, int) and not 0 <= prio <= 100:
            self.r.error((*path, "boot_priority"), f"{prio} is outside 0-100")
        sched = v.get("snapshots_schedule")
        if isinstance(sched, str) and not _cron_ok(sched):
            self.r.error((*path, "snapshots_schedule"), f'"{sched}" is not a cron schedule',
                         'five fields, e.g. "0 2 * * *" (daily at 02:00), or @daily')
        expiry = v.get("snapshots_expiry")
        if isinstance(expiry, str) and not EXPIRY_RE.match(expiry):
            self.r.error((*path, "snapshots_expiry"), f'"{expiry}" is not a duration',
                         'a number and a unit d, h or m, e.g. "30d"')
        pdata = v["persistent_data"]
        assert isinstance(pdata, Mapping)
        for vol, vraw in pdata.items():
            vpath: KeyPath = (*path, "persistent_data", str(vol))
            if not isinstance(vol, str) or not ITEM_RE.match(vol):
                self.r.error(vpath, "volume names are letters, digits, '.', '_' and '-'")
                continue
            pv = schema.read("persistent_volume", vraw, vpath, self.r)
            if pv is None or "path" not in pv:
                continue
            mount = self._abs_path(pv["path"], (*vpath, "path"))
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
        hint = "use type: vm, or opt in with global.allow_privileged: true"
        if m.config.get(PRIVILEGED_KEY, "").lower() in TRUE_WORDS:
            self.r.error((*m.path, "config", PRIVILEGED_KEY),
                         "a privileged LXC container shares root with the host", hint)
        for p in m.profiles:
            prof = d.profiles.get(p)
            if prof is not None and prof.config.get(PRIVILEGED_KEY, "").lower() in TRUE_WORDS:
                self.r.error((*m.path, "profiles"), f'profile "{p}" makes this LXC container '
                             "privileged: it would share root with the host", hint)

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
            if not isinstance(name, str) or not ITEM_RE.match(name):
                self.r.error(path, "shared volume names are letters, digits, '.', '_' and '-'")
                continue
            v = schema.read("shared_volume", vraw, path, self.r)
            if v is None:
                continue
            source = self._abs_path(v.get("source") or
                                    posixpath.join(self.settings.shared_volumes_base, name),
                                    (*path, "source"))
            mount = self._abs_path(v.get("path") or f"/shared/{name}", (*path, "path"))
            consumers = v["consumers"]
            assert isinstance(consumers, Mapping)
            if not consumers:
                self.r.warn((*path, "consumers"), "no consumers: the volume is mounted nowhere")
            modes: dict[str, str] = {}
            for who, mode in consumers.items():
                cpath: KeyPath = (*path, "consumers", str(who))
                if mode not in ("ro", "rw"):
                    self.r.error(cpath, f"must be ro or rw, not {_show(mode)}")
                    continue
                if self._reference(who, cpath, allow_host=False) is not None:
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
                devices[dev] = (_disk_path(conf), (*d.path, "profiles", p, "devices", dev))
        for dev, conf in m.devices.items():
            devices[dev] = (_disk_path(conf), (*m.path, "devices", dev))
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

    # -- network policies -----------------------------------------------------------------------

    def _policies(self, raw: object) -> list[NetworkPolicy]:
        out: list[NetworkPolicy] = []
        assert isinstance(raw, list)
        for i, praw in enumerate(raw):
            path: KeyPath = ("network_policies", i)
            p = schema.read("policy", praw, path, self.r)
            if p is None:
                continue
            ends = [self._reference(p.get(k), (*path, k)) if k in p else None
                    for k in ("from", "to")]
            ports = self._ports(p["ports"], (*path, "ports"))
            proto = self._choice(p["protocol"], ("tcp", "udp"), (*path, "protocol"))
            if None in ends or ports is False:
                continue
            src, dst = ends
            assert src is not None and dst is not None and ports is not False
            off = [e.domain for e in (src, dst)
                   if e.domain is not None and not self.domains[e.domain].v["enabled"]]
            if off:
                self.r.warn(path, f'names disabled domain "{off[0]}": ignored until it is '
                            "enabled")
                continue
            if src == dst:
                self.r.warn(path, f'from and to are both "{src.name}": traffic within one '
                            "place is never filtered, so this policy changes nothing")
            out.append(NetworkPolicy(str(p["description"]), src, dst, ports, proto,
                                     bool(p["bidirectional"])))
        return out

    def _reference(self, name: object, path: KeyPath, allow_host: bool = True
                   ) -> Endpoint | None:
        """Resolve a policy endpoint or volume consumer: host, a domain or a machine."""
        if not isinstance(name, str):
            self.r.error(path, f"must be a name, not {describe(name)}")
            return None
        if name == HOST and allow_host:
            return Endpoint("host", HOST)
        d, m = self.domains.get(name), self.machines.get(name)
        if d and m:
            self.r.error(path, f'"{name}" is both a domain and a machine', "rename one of them")
            return None
        if d:
            return Endpoint("domain", name, domain=name)
        if m:
            return Endpoint("machine", name, domain=m.domain, ip=self.ips.get(name))
        choices = [*self.domains, *self.machines, *([HOST] if allow_host else [])]
        self.r.error(path, f'"{name}" is not a known domain or machine'
                     + (' (nor "host")' if allow_host else ""), schema.suggest(name, choices))
        return None

    def _ports(self, raw: object, path: KeyPath) -> tuple[int, ...] | bool | None:
        """None for all ports, the ports, or False when invalid (reported)."""
        if raw == "all":
            return None
        if not isinstance(raw, list) or not raw:
            self.r.error(path, f"must be a list of ports or all, not {describe(raw)}"
                         if raw != [] else "must not be empty", 'e.g. [80, 443] or "all"')
            return False
        ok = True
        out: list[int] = []
        for i, port in enumerate(raw):
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                self.r.error((*path, i), f"{_show(port)} is not a port (1-65535)")
                ok = False
            elif port not in out:
                out.append(port)
        return tuple(out) if ok else False

    # -- building -------------------------------------------------------------------------------

    def _build(self, project: str, policies: list[NetworkPolicy], version: int) -> Infra:
        domains = []
        for d in sorted(self.domains.values(), key=lambda d: d.name):
            seq, subnet = self.subnets[d.name]
            machines = tuple(self._build_machine(d, m) for m in d.machines)
            domains.append(Domain(
                name=d.name, subnet=subnet, seq=seq, enabled=bool(d.v["enabled"]),
                description=str(d.v["description"]), trust_level=d.trust,
                ephemeral=bool(d.v["ephemeral"]), profiles=tuple(d.profiles.values()),
                machines=machines))
        return Infra(project, self.settings, tuple(domains), tuple(policies), version)

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

    # -- small checks ---------------------------------------------------------------------------

    def _name(self, name: object, path: KeyPath, what: str, maximum: int) -> bool:
        if not isinstance(name, str):
            self.r.error(path, f"{what} names must be strings, not {describe(name)}", QUOTE_HINT)
            return False
        if not NAME_RE.match(name):
            self.r.error(path, f'invalid {what} name "{name}"',
                         "lowercase letters, digits and '-', not starting or ending with '-'")
            return False
        if len(name) > maximum:
            why = " (its bridge net-<name> must fit in 15 characters)" if what == "domain" else ""
            self.r.error(path, f'{what} name "{name}" is longer than {maximum} characters{why}')
            return False
        if name == HOST:
            self.r.error(path, f'"{HOST}" is reserved: network policies use it for the appliance')
            return False
        return True

    def _choice(self, value: object, choices: tuple[str, ...], path: KeyPath) -> str:
        if value in choices:
            return str(value)
        self.r.error(path, f"must be one of {', '.join(choices)}, not {_show(value)}",
                     schema.suggest(str(value), choices))
        return choices[0]

    def _image(self, value: object, path: KeyPath) -> str:
        if isinstance(value, str) and IMAGE_RE.match(value):
            return value
        self.r.error(path, f"{_show(value)} is not an image alias or fingerprint",
                     'e.g. "debian/13" or "images:debian/13"')
        return GlobalSettings.default_os_image

    def _abs_path(self, value: object, path: KeyPath) -> str:
        if (isinstance(value, str) and value.startswith("/") and "\0" not in value
                and ".." not in value.split("/")):
            return posixpath.normpath(value)
        self.r.error(path, f"{_show(value)} is not an absolute path",
                     'it starts with "/" and has no ".." in it')
        return "/"

    def _string_map(self, raw: object, path: KeyPath) -> dict[str, str]:
        """Incus config keys take strings: YAML `true`/`2` become "true"/"2"."""
        out: dict[str, str] = {}
        assert isinstance(raw, Mapping)
        for key, value in raw.items():
            if not isinstance(key, str) or not key:
                self.r.error((*path, str(key)), f"keys must be strings, not {describe(key)}")
            elif isinstance(value, bool):
                out[key] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                out[key] = str(value)
            else:
                self.r.error((*path, key), f"must be a string, number or boolean, not "
                             f"{describe(value)}")
        return out

    def _devices(self, raw: object, path: KeyPath) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        assert isinstance(raw, Mapping)
        for name, conf in raw.items():
            if not isinstance(name, str) or not ITEM_RE.match(name):
                self.r.error((*path, str(name)),
                             "device names are letters, digits, '.', '_' and '-'")
            elif not isinstance(conf, Mapping):
                self.r.error((*path, name), f"must be a mapping, not {describe(conf)}",
                             "e.g. {type: disk, source: /srv/x, path: /x}")
            else:
                out[name] = self._string_map(conf, (*path, name))
        return out


def _disk_path(conf: Mapping[str, str]) -> str | None:
    return conf.get("path") if conf.get("type") == "disk" else None


def _cron_ok(s: str) -> bool:
    if s.strip() in CRON_ALIASES:
        return True
    fields = s.split()
    return len(fields) == 5 and all(CRON_FIELD_RE.match(f) for f in fields)


def _show(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value) if value is not None \
        else "nothing"


def _int_or_none(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str_or_none(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _bool_or_none(v: object) -> bool | None:
    return v if isinstance(v, bool) else None
