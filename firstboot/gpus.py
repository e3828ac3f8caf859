"""GPUs on the PCI bus and their video memory.

The PCI scan reads sysfs (class 0x03xxxx: display controllers), so it sees a GPU even when no
driver is bound. VRAM comes from the driver: amdgpu exposes it in sysfs, NVIDIA only through
nvidia-smi; without either it stays unknown rather than guessed from BAR sizes (resizable BARs
make those meaningless).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

VENDORS = {"0x10de": "NVIDIA", "0x1002": "AMD", "0x8086": "Intel"}
DISPLAY_CLASS = "0x03"  # PCI base class: display controller (VGA, 3D, other)


@dataclass(frozen=True)
class Gpu:
    pci: str  # domain:bus:device.function, e.g. 0000:01:00.0
    vendor: str
    vendor_id: str
    device_id: str
    driver: str | None
    vram: int | None  # bytes; None when no driver reports it

    @property
    def dedicated(self) -> bool:
        return self.vendor in ("NVIDIA", "AMD") and self.vram is not None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def scan(sys_root: Path = Path("/sys")) -> list[Gpu]:
    """Display controllers on the PCI bus, with the VRAM amdgpu reports in sysfs."""
    found = []
    devices = sys_root / "bus/pci/devices"
    for dev in sorted(devices.iterdir()) if devices.is_dir() else ():
        klass = _read(dev / "class") or ""
        if not klass.startswith(DISPLAY_CLASS):
            continue
        vendor_id = _read(dev / "vendor") or "?"
        driver = dev / "driver"
        vram = _read(dev / "mem_info_vram_total")  # amdgpu only
        found.append(Gpu(
            pci=dev.name,
            vendor=VENDORS.get(vendor_id, vendor_id),
            vendor_id=vendor_id,
            device_id=_read(dev / "device") or "?",
            driver=driver.resolve().name if driver.exists() else None,
            vram=int(vram) if vram and vram.isdigit() else None,
        ))
    return found


NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=pci.bus_id,memory.total",
                    "--format=csv,noheader,nounits"]


def parse_nvidia_smi(text: str) -> dict[str, int]:
    """`NVIDIA_SMI_QUERY` output -> {pci address: VRAM bytes}. nvidia-smi prints the bus id
    with an 8-digit domain (00000000:01:00.0) and memory in MiB."""
    out = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) != 2:
            continue
        bus, mib = row[0].strip().lower(), row[1].strip()
        if not mib.isdigit():
            continue
        domain, _, rest = bus.partition(":")
        out[f"{int(domain, 16):04x}:{rest}"] = int(mib) * 1024**2
    return out


def with_vram(gpus: list[Gpu], reported: Mapping[str, int]) -> list[Gpu]:
    """Fill in VRAM that a driver tool reported, keyed by PCI address."""
    return [replace(g, vram=reported[g.pci]) if g.vram is None and g.pci in reported else g
            for g in gpus]
