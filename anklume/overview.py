"""The machine at a glance for `anklume status`: version, how it booted, the data pool, Secure
Boot and the TPM, with the warnings a user must see. Each fact comes from the file or variable
its owner writes (the initrd's toram and persist records, the unlock's pool status, efivarfs);
`collect` reads them, `warnings` and `lines` are pure. On a development host only what applies
there is shown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from anklume import os_release, paths, secureboot

SCHEMA = 1  # of `anklume status --json`'s "machine" and "warnings"; bumped on any change
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


def collect(run: Path | None = None, state: Path | None = None) -> Machine:
    run = run or paths.run_dir()
    state = state or paths.state_dir()
    version = os_release.image_version(OS_RELEASE)
    toram = _kv(run / "toram/status")
    try:
        tpm_ok = TPM_VERSION.read_text().strip() == "2"
    except OSError:
        tpm_ok = False
    return Machine(
        appliance=version is not None, version=version, secure_boot=secureboot.state(),
        tpm=tpm_ok, boot_from=(toram.get("state") or "disk") if version else None,
        stick_removable=(run / "toram/removable").exists(), toram_reason=toram.get("reason", ""),
        persist=_kv(run / "persist"), pool=_kv(run / "pool-status"),
        has_pool=(state / "firstboot.json").exists())


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
    return [
        f"version:     {m.version}",
        f"boot:        {boot}",
        f"pool:        {pool}",
        f"secure boot: {m.secure_boot}",
        f"tpm:         {'2.0' if m.tpm else 'none'}",
    ]


def as_json(m: Machine) -> dict[str, object]:
    return {"schema": SCHEMA, "machine": asdict(m), "warnings": warnings(m)}
