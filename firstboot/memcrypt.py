"""Memory encryption (the third layer: RAM contents against cold-boot attacks).

Support comes from the CPU flags in /proc/cpuinfo; whether it is active is what the kernel said
at boot (AMD: "Memory Encryption Features active: AMD SME"; Intel: "x86/tme: enabled by BIOS").
AMD SME is switched on by the `mem_encrypt=on` kernel parameter; Intel TME by the firmware.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FEATURES = {  # cpuinfo flag -> name
    "sme": "AMD SME",
    "sev": "AMD SEV",
    "sev_es": "AMD SEV-ES",
    "sev_snp": "AMD SEV-SNP",
    "tme": "Intel TME",
}

_ACTIVE = (
    re.compile(r"Memory Encryption Features active:.*\bSME\b"),
    re.compile(r"x86/tme: enabled by BIOS"),
)


@dataclass(frozen=True)
class MemoryEncryption:
    supported: tuple[str, ...]  # feature names the CPU offers
    active: bool | None  # None: the kernel log was not readable
    advice: str


def cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def assess(cpuinfo: str, cmdline: str, kernel_log: str | None) -> MemoryEncryption:
    flags = cpu_flags(cpuinfo)
    supported = tuple(name for flag, name in FEATURES.items() if flag in flags)
    active = None if kernel_log is None else any(p.search(kernel_log) for p in _ACTIVE)
    if active:
        advice = "active"
    elif "sme" in flags:
        advice = ("supported: boot with mem_encrypt=on" if "mem_encrypt=on" not in cmdline.split()
                  else "mem_encrypt=on given but the kernel did not activate SME (firmware?)")
    elif "tme" in flags:
        advice = "supported: enable Total Memory Encryption in the firmware setup"
    else:
        advice = "not supported by this CPU"
    return MemoryEncryption(supported, active, advice)
