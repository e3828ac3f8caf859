"""The machine at a glance for `anklume status`: version and slot, the other slot and the
update state, how it booted, the data pool and its space, Secure Boot, the TPM, memory
encryption, GPUs, the isolation table, with the warnings a user must see. Each fact comes from
its owner (the initrd's toram and persist records, the unlock's pool status, efivarfs,
bootctl and the update state, zpool, the kernel); `collect` reads them through the small
readers below (tests replace them), `warnings` and `lines` are pure. On a development host
only what applies there is shown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from anklume import os_release, paths, secureboot

SCHEMA = 2  # of `anklume status --json`'s "machine" and "warnings"; bumped on any change
OS_RELEASE = Path("/usr/lib/os-release")
TPM_VERSION = Path("/sys/class/tpm/tpm0/tpm_version_major")


def _kv(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@dataclass(frozen=True)
class Machine:
    appliance: bool  # an anklume image (else a development host)
    version: str | None
    secure_boot: str  # secureboot.ON/OFF/SETUP/NO_EFI
    tpm: bool
    boot_from: str | None  # "ram" or "disk"; None off the appliance
    stick_removable: bool
    toram_reason: str
    persist: dict[str, str] = field(default_factory=dict)  # state, device, reason
    pool: dict[str, str] = field(default_factory=dict)  # pool-status fields; {} = live mode
    has_pool: bool = False  # the first-boot wizard made one (firstboot.json)
    # slot, state (of the running version), other ([{version, state}]), pending, fell_back_from,
    # failed; or {"error": ...} when bootctl could not say
    update: dict[str, object] = field(default_factory=dict)
    pool_space: dict[str, object] = field(default_factory=dict)  # health, free, size (bytes)
    memory_encryption: dict[str, object] = field(default_factory=dict)  # supported, active
    gpus: list[dict[str, object]] = field(default_factory=list)  # vendor, device, driver, vram
    isolation: str | None = None  # "loaded" | "none"; None where it was not read


# ----------------------------------------------------------------- readers (the system)

def read_update() -> dict[str, object]:
    """The update state of this machine, as `anklume update status` sees it."""
    from anklume.errors import AnklumeError
    from anklume.updates import bootctl, rollback, slot, status
    from anklume.updates import state as update_state

    try:
        running = status.running_version()
        st = update_state.load()
        r = status.report(running, bootctl.entries(), st, slot.running())
    except (AnklumeError, OSError, ValueError) as e:
        return {"error": str(e)}
    us = rollback.ukis(r.entries)
    ours = next((u for u in us if u.version == running), None)
    return {
        "slot": r.slot.name if r.slot else None,
        "state": status.state_of(ours, r) if ours else "not in the boot menu",
        "other": [{"version": u.version, "state": status.state_of(u, r)}
                  for u in us if u.version != running],
        "pending": [e.version or e.id for e in r.pending],
        "fell_back_from": r.fell_back_from, "failed": list(r.failed)}


def read_pool_space(pool: dict[str, str]) -> dict[str, object]:
    """Health and space of the unlocked pool: zpool's own view, or the btrfs mount's."""
    import os
    import subprocess

    from anklume.errors import AnklumeError
    from anklume.run import run

    if pool.get("state") != "unlocked":
        return {}
    if pool.get("backend") == "zfs":
        try:
            out = run(["zpool", "list", "-H", "-p", "-o", "health,free,size",
                       pool.get("pool", "")], timeout=30).stdout.split()
            return {"health": out[0], "free": int(out[1]), "size": int(out[2])}
        except (AnklumeError, OSError, subprocess.SubprocessError, IndexError,
                ValueError) as e:
            return {"health": "unknown", "error": str(e)}
    try:
        v = os.statvfs(paths.pool_mount())
    except OSError as e:
        return {"health": "unknown", "error": str(e)}
    return {"health": "mounted", "free": v.f_bavail * v.f_frsize, "size": v.f_blocks * v.f_frsize}


def read_memory_encryption() -> dict[str, object]:
    from anklume.firstboot import detect

    try:
        m = detect.memory_encryption()
    except OSError:
        return {}
    return {"supported": list(m.supported), "active": m.active, "advice": m.advice}


def read_gpus() -> list[dict[str, object]]:
    from anklume.firstboot import detect

    try:
        return [{"vendor": g.vendor, "device": f"{g.vendor_id}:{g.device_id}",
                 "driver": g.driver, "vram": g.vram} for g in detect.graphics()]
    except OSError:
        return []


def read_isolation() -> str | None:
    from anklume.agent import nft_live
    from anklume.errors import AnklumeError

    try:
        return "loaded" if nft_live.read_table() is not None else "none"
    except (AnklumeError, OSError):
        return None


def collect(run: Path | None = None, state: Path | None = None) -> Machine:
    run = run or paths.run_dir()
    state = state or paths.state_dir()
    version = os_release.image_version(OS_RELEASE)
    toram = _kv(run / "toram/status")
    try:
        tpm_ok = TPM_VERSION.read_text().strip() == "2"
    except OSError:
        tpm_ok = False
    pool = _kv(run / "pool-status")
    appliance = version is not None
    return Machine(
        appliance=appliance, version=version, secure_boot=secureboot.state(),
        tpm=tpm_ok, boot_from=(toram.get("state") or "disk") if version else None,
        stick_removable=(run / "toram/removable").exists(), toram_reason=toram.get("reason", ""),
        persist=_kv(run / "persist"), pool=pool,
        has_pool=(state / "firstboot.json").exists(),
        update=read_update() if appliance else {},
        pool_space=read_pool_space(pool) if appliance else {},
        memory_encryption=read_memory_encryption(), gpus=read_gpus(),
        isolation=read_isolation() if appliance else None)


def warnings(m: Machine) -> list[str]:
    out = []
    sb = secureboot.warning(m.secure_boot)
    if sb and m.appliance:
        out.append(sb)
    if m.has_pool and m.pool.get("state") != "unlocked":
        out.append("the data pool is not unlocked at this boot"
                   + (f" ({m.pool['reason']})" if m.pool.get("reason") else "")
                   + ": nothing was deployed; reboot to try again")
    if m.appliance and m.persist.get("state") == "none":
        out.append("the persistent partition is not used: "
                   + (m.persist.get("reason") or "no reason recorded")
                   + "; what changes is lost at shutdown")
    if m.appliance and not m.has_pool:
        out.append("live mode: no encrypted data pool yet, and nothing kept on this stick is "
                   "protected")
    up = m.update
    if up.get("fell_back_from"):
        out.append(f"the last boot fell back from {up['fell_back_from']} to {m.version}: that "
                   "version failed to boot here (`anklume update status`)")
    if str(up.get("state", "")).startswith("running, on trial"):
        out.append(f"{m.version} is on trial: it counts as good once the health gate passes")
    health = m.pool_space.get("health")
    if health not in (None, "ONLINE", "mounted"):
        out.append(f"the data pool's health is {health}")
    if m.appliance and m.isolation == "none":
        out.append("no isolation table is loaded: the domains are not separated")
    return out


def _size(n: object) -> str:
    return f"{n / 1024**3:.1f} GiB" if isinstance(n, int) else "?"


def _update_lines(up: dict[str, object]) -> list[str]:
    if "error" in up:
        return [f"update:      unknown ({up['error']})"]
    others = up.get("other") or []
    assert isinstance(others, list)
    out = [f"other slot:  {o['version']}, {o['state']}" for o in others] or [
        "other slot:  empty (no other version installed)"]
    pending = up.get("pending") or []
    assert isinstance(pending, list)
    if pending:
        out.append(f"update:      {', '.join(map(str, pending))} boots next, on trial")
    return out


def lines(m: Machine) -> list[str]:
    if not m.appliance:
        return [f"machine:     a development host (secure boot: {m.secure_boot})"]
    boot = ("from RAM" + (", the stick can be removed" if m.stick_removable else "")
            if m.boot_from == "ram" else
            "from the stick" + (f" ({m.toram_reason})" if m.toram_reason else ""))
    if not m.has_pool:
        pool = "none: live mode (state in RAM)"
    elif m.pool.get("state") == "unlocked":
        pool = (f"{m.pool.get('backend', '?')} pool {m.pool.get('pool', '?')} on "
                f"{m.pool.get('disk', '?')}, unlocked")
    else:
        pool = f"DEGRADED: {m.pool.get('reason') or 'not unlocked at this boot'}"
    if m.pool_space.get("free") is not None:
        pool += f", {m.pool_space.get('health')}, {_size(m.pool_space.get('free'))} free of " \
                f"{_size(m.pool_space.get('size'))}"
    up = m.update
    where = f", slot {up['slot']}" if up.get("slot") else ""
    state = f", {str(up['state']).removeprefix('running, ')}" if up.get("state") else ""
    me = m.memory_encryption
    supported = me.get("supported")
    names = ", ".join(map(str, supported)) if isinstance(supported, list) else ""
    memory = ("unknown" if not me else "active" if me.get("active") else
              f"{names} available, not active" if names else "not offered by this CPU")
    gpus = "; ".join(f"{g['vendor']} {g['device']}" + (f" ({_size(g['vram'])})"
                                                       if g.get("vram") else "")
                     for g in m.gpus) or "none"
    return [
        f"version:     {m.version}{where}{state}",
        *_update_lines(up),
        f"boot:        {boot}",
        f"pool:        {pool}",
        f"secure boot: {m.secure_boot}",
        f"tpm:         {'2.0' if m.tpm else 'none'}",
        f"memory encryption: {memory}",
        f"gpus:        {gpus}",
        "isolation:   " + ("the anklume table is loaded" if m.isolation == "loaded"
                            else "NO TABLE LOADED" if m.isolation == "none" else "unknown"),
    ]


def as_json(m: Machine) -> dict[str, object]:
    return {"schema": SCHEMA, "machine": asdict(m), "warnings": warnings(m)}
