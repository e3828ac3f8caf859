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
from dataclasses import dataclass, field, replace
from pathlib import Path

from anklume.agent import (
    addressing,
    containment,
    loader,
    machines,
    policies,
    schema,
    services,
    values,
)
from anklume.agent.machines import MachineSpec
from anklume.agent.model import (
    Domain,
    GlobalSettings,
    Infra,
    InstanceType,
    Machine,
    NetworkPolicy,
    Profile,
    SharedVolumeMount,
    TrustLevel,
    bridge_name,
    frozen_map,
)
from anklume.problems import (
    KeyPath,
    Locator,
    Problem,
    Report,
    ValidationError,
)

__all__ = ["Problem", "ValidationError", "load", "load_with_warnings", "validate"]

_log = logging.getLogger("anklume.agent.validate")

SCHEMA_VERSION = 1
DOMAIN_NAME_MAX = 63  # a DNS label; longer names get a derived bridge name (model.bridge_name)

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
class _DomainSpec:
    name: str
    path: KeyPath
    v: dict[str, object]
    trust: TrustLevel = TrustLevel.SEMI_TRUSTED
    addr_ok: bool = True  # bad trust level or subnet_id: no subnet, skip its addressing checks
    profiles: dict[str, Profile] = field(default_factory=dict)
    machines: list[MachineSpec] = field(default_factory=list)


class _Validator:
    def __init__(self, report: Report) -> None:
        self.r = report
        self.settings = GlobalSettings()
        self.domains: dict[str, _DomainSpec] = {}
        self.machines: dict[str, MachineSpec] = {}
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
        self._bridges()
        self._addresses(legacy_base)
        self._shared_volumes(top["shared_volumes"])
        roots = (self.settings.shared_volumes_base, self.settings.persistent_data_base)
        for m in self.machines.values():
            d = self.domains[m.domain]
            machines.check_devices(self.r, m, d.path, d.profiles)
            machines.check_containment(self.r, m, d.path, d.profiles, roots)
        # Domains by name, like Infra.domains: both forms of a config report alike.
        machines.check_gpus(self.r, self.settings.gpu_policy, [
            m for d in sorted(self.domains.values(), key=lambda d: d.name) if d.v["enabled"]
            for m in d.machines if machines.has_gpu(m, d.profiles)])
        nets = top["network_policies"]
        assert isinstance(nets, list)
        flows = policies.resolve(self.r, self._names(), nets)
        providers = []
        for m in self.machines.values():
            offered = m.v.get("services")
            if offered:
                assert isinstance(offered, Mapping)  # schema.read made it one
                providers.append(services.Provider(m.name, m.domain, m.path, m.type, offered))
        grants = services.resolve(self.r, self._names(), providers,
                                  {m.name: (m.domain, m.type) for m in self.machines.values()})
        if self.r.errors:
            return None
        return replace(self._build(str(name), flows, version), services=grants)

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
        if firewall == "vm":
            r.warn((*path, "firewall_mode"), "vm (a firewall VM) is not supported yet: the "
                   "appliance filters on the host, as with host")
        sv_base = values.abs_path(r, g["shared_volumes_base"], (*path, "shared_volumes_base"))
        pd_base = values.abs_path(r, g["persistent_data_base"], (*path, "persistent_data_base"))
        for key in ("shared_volumes_base", "persistent_data_base"):
            # Every host path handed to a machine lives under these: the whole host is not one.
            base = g[key]
            if isinstance(base, str) and posixpath.normpath(base) == "/":
                r.error((*path, key), "must not be / (machines would get the host's whole "
                        "file system)", "a directory of its own, e.g. /srv/anklume/data")
        self.settings = GlobalSettings(
            base_octet=10, zone_base=zone_base, default_os_image=image,
            gpu_policy=gpu_policy, firewall_mode=firewall, shared_volumes_base=sv_base,
            persistent_data_base=pd_base, allow_privileged=bool(g["allow_privileged"]),
            prune_at_boot=bool(g["prune_at_boot"]))
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
            trust = str(v["trust_level"])  # schema.read made it a string
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

    def _bridges(self) -> None:
        # Two derived bridge names can collide (same first 6 characters and hash prefix, or a
        # derived name equal to another domain's plain one): Incus would merge the domains.
        seen: dict[str, str] = {}
        for d in sorted(self.domains.values(), key=lambda d: d.name):
            br = bridge_name(d.name)
            if br in seen:
                self.r.error(d.path, f'bridge name "{br}" is also the bridge of domain '
                             f'"{seen[br]}"', "rename one of the two domains")
            else:
                seen[br] = d.name
        for d in self.domains.values():
            others = {b for b, n in seen.items() if n != d.name}
            for pname, prof in d.profiles.items():
                machines.check_nics(self.r, prof.devices, (*d.path, "profiles", pname, "devices"),
                                    bridge_name(d.name), others)
            for m in d.machines:
                machines.check_nics(self.r, m.devices, (*m.path, "devices"),
                                    bridge_name(d.name), others)

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
        m = machines.read(self.r, self.settings, d.name, d.path, d.profiles, name, raw,
                          self.machines)
        if m is not None:
            self.machines[m.name] = m
            d.machines.append(m)

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
            before = len(self.r.errors)
            source = values.abs_path(self.r, v.get("source") or
                                    posixpath.join(self.settings.shared_volumes_base, name),
                                    (*path, "source"))
            if v.get("source") and len(self.r.errors) == before and not containment.inside(
                    source, (self.settings.shared_volumes_base,)):
                # Mounted with shift into every consumer: a source outside the root of shared
                # volumes (/, /etc, the Incus state) would hand them the host's files.
                self.r.error((*path, "source"), f"{source} is outside global."
                             f"shared_volumes_base ({self.settings.shared_volumes_base})",
                             "put the volume there (the default source is "
                             "<shared_volumes_base>/<name>), or give one machine a disk "
                             "device with unsafe: [host-path]")
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
                if mode and v["propagate"] and m.type is InstanceType.VM:
                    self.r.warn((*path, "propagate"), f'has no effect on VM "{m.name}" (mount '
                                "propagation is for containers' bind mounts)")
                if mode:
                    m.mounts.append(SharedVolumeMount(
                        name, source, mount, readonly=mode == "ro", shift=bool(v["shift"]),
                        propagate=bool(v["propagate"])))

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

    def _build_machine(self, d: _DomainSpec, m: MachineSpec) -> Machine:
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
