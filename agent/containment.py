"""What infra.yml may hand a machine without breaking its containment (issue #20).

Incus takes any config key and device, and several hand a container the host: `raw.lxc`,
`raw.idmap`, a disk whose source is `/`, `/dev/mem` as a unix-char device, a NIC on a host
interface. So the keys and devices that keep a machine contained are listed here (an
allow-list: a key Incus adds later is refused until someone looks at it), and anything else
is an error that names it and says why, unless the machine opts in to that named capability
with `unsafe: [...]`; the opt-in is then repeated as a warning by validate, plan and apply,
and `anklume status` lists it after each agent run.

Capabilities: a config key outside the list is its own name (`raw.lxc`, `security.nesting`);
devices are `host-path` (a disk from a host directory outside anklume's data roots),
`host-device` (unix-char/-block/-hotplug, usb, pci, infiniband), `host-nic` (a NIC that is not
on the domain's bridge) and `proxy` (a proxy device of the user's: Incus connects from the
host, so it can reach the host's sockets; services: grants make their own, checked ones).
`security.privileged` keeps its own rule (global.allow_privileged, agent/machines.py).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from anklume.problems import KeyPath, Report

UNSAFE = "unsafe"  # the tag of an accepted opt-in's warning: `anklume status` lists those apart
SAFE_PREFIXES = (
    "limits.",  # resource limits only ever take away
    "boot.",  # start order and autostart
    "snapshots.",  # schedules and expiry
    "user.",  # free-form metadata
    "environment.",  # the instance's own environment variables
    "cloud-init.",  # the instance's own first-boot configuration
    "security.protection.",  # delete/shift protection
    "linux.sysctl.",  # set by LXC inside the (unprivileged) container's own namespaces
)
SAFE_KEYS = frozenset({
    "security.idmap.isolated",  # a uid range of its own: more isolation, not less
    "security.idmap.size",
    "security.devlxd",
    "security.secureboot",  # VMs: the guest's own firmware
    "security.csm",
    "security.privileged",  # its own rule: global.allow_privileged (agent/machines.py)
})
WHY_KEY = {
    "raw.": "passes raw settings to LXC, QEMU, AppArmor or the uid map, past every check of "
            "Incus's",
    "security.nesting": "lets the container run its own containers, with fewer layers of "
                        "confinement around it",
    "linux.kernel_modules": "loads kernel modules into the host's kernel",
    "security.syscalls.": "has the host carry out system calls on the container's behalf",
}
HOST_DEVICES = frozenset({"unix-char", "unix-block", "unix-hotplug", "usb", "pci",
                          "infiniband"})
SAFE_DEVICES = frozenset({"none", "disk", "nic", "gpu", "tpm"})
WHY_CAPABILITY = {
    "host-path": "a host directory outside anklume's data roots, readable and writable from "
                 "the machine",
    "host-device": "one of the host's devices, opened from inside the machine",
    "host-nic": "a NIC on a host interface, outside the domain's bridge and its firewall",
    "proxy": "a proxy device connects from the host, where it can reach the host's own "
             "sockets (the Incus API among them)",
}


@dataclass(frozen=True)
class Use:
    """One thing a machine gets that needs an opt-in: which capability, where, why."""
    capability: str
    path: KeyPath
    why: str


def key_safe(key: str) -> bool:
    return key in SAFE_KEYS or key.startswith(SAFE_PREFIXES)


def _why_key(key: str) -> str:
    for prefix, why in WHY_KEY.items():
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            return why
    return "not on anklume's list of keys that keep a machine contained (docs/infra-yml.md)"


def inside(path: str, roots: Iterable[str]) -> bool:
    """True when `path` (absolute) is one of `roots` or below one, `..` resolved first. A
    root of `/` contains nothing: it is refused as a data root (global settings)."""
    p = posixpath.normpath(path)
    for root in roots:
        r = posixpath.normpath(root)
        if r != "/" and (p == r or p.startswith(r + "/")):
            return True
    return False


def device_use(conf: Mapping[str, str], path: KeyPath, roots: Iterable[str]) -> Use | None:
    kind = conf.get("type", "")
    if kind in HOST_DEVICES:
        return Use("host-device", path, f"{kind}: {WHY_CAPABILITY['host-device']}")
    if kind == "proxy":
        return Use("proxy", path, WHY_CAPABILITY["proxy"])
    if kind == "nic" and (conf.get("nictype") or conf.get("parent") or not conf.get("network")):
        return Use("host-nic", path, WHY_CAPABILITY["host-nic"])
    if kind == "disk":
        source = conf.get("source", "")
        if source.startswith("/") and not conf.get("pool") and not inside(source, roots):
            return Use("host-path", path, f"{source}: {WHY_CAPABILITY['host-path']}")
    if kind not in SAFE_DEVICES | HOST_DEVICES | {"proxy"}:
        return Use(f"device:{kind}", path, "a device type anklume does not know to be "
                   "contained")
    return None


def uses(config: Iterable[tuple[str, KeyPath]],
         devices: Iterable[tuple[Mapping[str, str], KeyPath]],
         roots: Iterable[str]) -> list[Use]:
    """Every capability a machine's effective config keys and devices (its profiles' and its
    own, with where each is written) need."""
    roots = tuple(roots)
    out = [Use(key, path, _why_key(key)) for key, path in config if not key_safe(key)]
    for conf, path in devices:
        u = device_use(conf, path, roots)
        if u is not None:
            out.append(u)
    return out


def check(r: Report, machine: str, unsafe: Iterable[str], found: list[Use],
          unsafe_path: KeyPath) -> None:
    """Errors for each use the machine did not opt in to; a warning for each it did (shown by
    validate, plan and apply), and for an opt-in that nothing uses."""
    allowed = set(unsafe)
    for u in found:
        if u.capability in allowed:
            r.warn(u.path, f'machine "{machine}" opts in to unsafe {u.capability}: {u.why}',
                   tag=UNSAFE)
        else:
            r.error(u.path, f"{u.capability} would weaken the containment of machine "
                    f'"{machine}": {u.why}',
                    f"remove it, or accept that with unsafe: [{u.capability}] on the machine")
    used = {u.capability for u in found}
    for cap in sorted(allowed - used):
        r.warn(unsafe_path, f'unsafe: {cap} is not needed by machine "{machine}"',
               "remove it from the list")
