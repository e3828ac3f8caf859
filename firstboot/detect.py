"""What the machine offers, read from the running system (the wizard's first step).

Read-only: nothing here writes to a disk or loads a module, so `anklume firstboot detect` is
safe on any machine, at any time.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from anklume import log, lsblk
from anklume.firstboot import disks, gpus, memcrypt
from anklume.firstboot.recommend import Recommendation, recommend
from anklume.run import run

_log = log.get("firstboot")


@dataclass(frozen=True)
class Hardware:
    disks: list[disks.Disk]
    gpus: list[gpus.Gpu]
    models: Recommendation
    memory_encryption: memcrypt.MemoryEncryption

    def to_json(self) -> str:
        doc = asdict(self)
        for d, disk in zip(doc["disks"], self.disks, strict=True):
            d.update(candidate=disk.candidate, empty=disk.empty, existing_pool=disk.existing_pool)
        return json.dumps(doc, indent=2)


def block_devices() -> list[disks.Disk]:
    out = run(["lsblk", "--json", "--bytes", "--tree", "--output", lsblk.DISK_COLUMNS]).stdout
    return disks.from_lsblk(json.loads(out))


def graphics(sys_root: Path = Path("/sys")) -> list[gpus.Gpu]:
    found = gpus.scan(sys_root)
    if any(g.vendor == "NVIDIA" and g.vram is None for g in found) and shutil.which("nvidia-smi"):
        proc = run(gpus.NVIDIA_SMI_QUERY, check=False, timeout=30)
        if proc.returncode == 0:
            found = gpus.with_vram(found, gpus.parse_nvidia_smi(proc.stdout))
        else:
            log.event(_log, "nvidia-smi failed: VRAM unknown", logging.WARNING,
                      error=proc.stderr.strip())
    return found


def _kernel_log() -> str | None:
    proc = run(["dmesg"], check=False, timeout=30)
    return proc.stdout if proc.returncode == 0 else None


def memory_encryption() -> memcrypt.MemoryEncryption:
    return memcrypt.assess(Path("/proc/cpuinfo").read_text(), Path("/proc/cmdline").read_text(),
                           _kernel_log())


def detect() -> Hardware:
    found = graphics()
    return Hardware(block_devices(), found, recommend(found), memory_encryption())


def describe(hw: Hardware) -> str:
    """The human-readable report."""
    gib = 1024**3
    lines = ["Disks:"]
    for d in hw.disks:
        what = " ".join(x for x in (d.model, d.serial and f"serial {d.serial}", d.transport) if x)
        state = ("existing " + d.existing_pool + " pool" if d.existing_pool
                 else "empty" if d.empty else "has data: " + ",".join(d.signatures))
        verdict = "candidate" if d.candidate else f"not usable: {d.unusable}"
        lines.append(f"  {d.path}  {d.size / gib:.1f} GiB  {what or '-'}  [{state}]  {verdict}")
    lines.append("GPUs:")
    for g in hw.gpus:
        vram = f"{g.vram / gib:.0f} GiB VRAM" if g.vram is not None else "VRAM unknown"
        lines.append(f"  {g.pci}  {g.vendor} {g.device_id}  driver {g.driver or '-'}  {vram}")
    if not hw.gpus:
        lines.append("  none")
    models = ", ".join(hw.models.models) or "none (API-only)"
    lines.append(f"Local models: {models}  ({hw.models.reason})")
    me = hw.memory_encryption
    active = {True: "active", False: "inactive", None: "unknown"}[me.active]
    lines.append(f"Memory encryption: {', '.join(me.supported) or 'none'}; {active}; {me.advice}")
    return "\n".join(lines)
