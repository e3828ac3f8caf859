"""The first-boot wizard's detection: disks from lsblk, GPUs from sysfs, VRAM tiers, memory
encryption (pure parts against recorded or built inputs; `detect` itself on this host)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from anklume.firstboot import disks, gpus, memcrypt
from anklume.firstboot.detect import block_devices, describe, detect
from anklume.firstboot.recommend import TIERS, GiB, recommend

FIXTURES = Path(__file__).parent / "fixtures" / "lsblk"


def by_path(found: list[disks.Disk]) -> dict[str, disks.Disk]:
    return {d.path: d for d in found}


# --- disks -------------------------------------------------------------------------------------


def test_disks_of_an_appliance_booted_from_usb() -> None:
    found = by_path(disks.from_lsblk(json.loads((FIXTURES / "appliance-on-usb.json").read_text())))
    assert "/dev/sr0" not in found  # not a disk
    empty = found["/dev/nvme0n1"]
    assert empty.candidate and empty.empty and empty.existing_pool is None
    assert (empty.model, empty.serial, empty.transport) == (
        "Samsung SSD 980 PRO 500GB", "S5GXNF0R123456", "nvme")

    zfs = found["/dev/nvme1n1"]
    assert zfs.candidate and not zfs.empty and zfs.existing_pool == "zfs"
    luks = found["/dev/sdb"]
    assert luks.candidate and luks.existing_pool == "luks" and luks.rotational

    stick = found["/dev/sda"]
    assert stick.image and not stick.candidate
    assert "/usr" in stick.mounts and "/var/lib/anklume" in stick.mounts  # through dm-verity
    assert "running system" in (stick.unusable or "")

    assert "too small" in (found["/dev/sdc"].unusable or "")
    assert "mounted at /media/stick" in (found["/dev/sdd"].unusable or "")
    assert "zram" in (found["/dev/zram0"].unusable or "")
    assert sorted(p for p, d in found.items() if d.candidate) == [
        "/dev/nvme0n1", "/dev/nvme1n1", "/dev/sdb"]


def test_a_second_anklume_stick_is_never_offered_for_the_pool() -> None:
    """In toram mode, or with a spare stick plugged in, an anklume image is not mounted; its
    partition labels still keep it out of the pool."""
    doc = {"blockdevices": [{
        "name": "sdb", "path": "/dev/sdb", "type": "disk", "size": 64 * GiB, "rm": True,
        "pttype": "gpt", "mountpoints": [None],
        "children": [{"name": "sdb2", "type": "part", "size": GiB, "fstype": "squashfs",
                      "partlabel": "anklume_0.2.0", "mountpoints": [None]}]}]}
    (d,) = disks.from_lsblk(doc)
    assert d.image and d.unusable == "an anklume boot medium"


def test_old_lsblk_string_flags_and_empty_document() -> None:
    doc = {"blockdevices": [{"name": "vdb", "type": "disk", "size": "8589934592", "rm": "0",
                             "ro": "1", "rota": "1"}]}
    (d,) = disks.from_lsblk(doc)
    assert d.path == "/dev/vdb" and d.size == 8 * GiB and d.rotational and not d.removable
    assert d.unusable == "read-only"
    assert disks.from_lsblk({}) == []


def test_block_devices_on_this_host_match_sysfs() -> None:
    """The real lsblk: every whole disk the kernel lists appears, with the kernel's size, and
    the disk holding / is never a candidate."""
    found = by_path(block_devices())
    for dev in Path("/sys/block").iterdir():
        if dev.name.startswith(("loop", "dm-", "sr", "md", "nbd")):
            continue
        d = found.get(f"/dev/{dev.name}")
        assert d is not None, f"{dev.name} missing from {sorted(found)}"
        assert d.size == int((dev / "size").read_text()) * 512
    root = subprocess.run(["findmnt", "-no", "SOURCE", "/"], capture_output=True, text=True)
    holding_root = [d for d in found.values() if "/" in d.mounts]
    if root.stdout.startswith("/dev/"):
        assert holding_root, f"no disk reports / mounted (root is {root.stdout.strip()})"
    assert all(not d.candidate for d in holding_root)


# --- GPUs and models ---------------------------------------------------------------------------


def fake_pci(root: Path, addr: str, klass: str, vendor: str, driver: str | None = None,
             vram: int | None = None) -> None:
    dev = root / "bus/pci/devices" / addr
    dev.mkdir(parents=True)
    (dev / "class").write_text(klass + "\n")
    (dev / "vendor").write_text(vendor + "\n")
    (dev / "device").write_text("0x1234\n")
    if driver:
        target = root / "bus/pci/drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        os.symlink(target, dev / "driver")
    if vram is not None:
        (dev / "mem_info_vram_total").write_text(f"{vram}\n")


def test_scan_finds_display_controllers_with_amd_vram(tmp_path: Path) -> None:
    fake_pci(tmp_path, "0000:00:02.0", "0x030000", "0x8086", "i915")
    fake_pci(tmp_path, "0000:03:00.0", "0x030000", "0x1002", "amdgpu", vram=16 * GiB)
    fake_pci(tmp_path, "0000:01:00.0", "0x030200", "0x10de")  # 3D controller, no driver
    fake_pci(tmp_path, "0000:00:1f.3", "0x040300", "0x8086", "snd_hda_intel")  # audio
    found = {g.pci: g for g in gpus.scan(tmp_path)}
    assert sorted(found) == ["0000:00:02.0", "0000:01:00.0", "0000:03:00.0"]
    assert found["0000:03:00.0"].vram == 16 * GiB and found["0000:03:00.0"].driver == "amdgpu"
    assert found["0000:01:00.0"].vendor == "NVIDIA" and found["0000:01:00.0"].vram is None
    assert found["0000:00:02.0"].vendor == "Intel" and not found["0000:00:02.0"].dedicated


def test_nvidia_smi_fills_vram_by_pci_address() -> None:
    out = "00000000:01:00.0, 81559\n00000000:41:00.0, [N/A]\n"
    reported = gpus.parse_nvidia_smi(out)
    assert reported == {"0000:01:00.0": 81559 * 1024**2}
    gpu = gpus.Gpu("0000:01:00.0", "NVIDIA", "0x10de", "0x2330", "nvidia", None)
    (filled,) = gpus.with_vram([gpu], reported)
    assert filled.vram == 81559 * 1024**2 and filled.dedicated


@pytest.mark.parametrize(("vram_gib", "first_model"), [
    (4, "qwen2.5-coder:7b"), (8, "qwen2.5-coder:7b"), (12, "qwen2.5-coder:14b"),
    (16, "qwen2.5-coder:14b"), (24, "qwen2.5-coder:32b"), (80, "deepseek-coder-v2:latest"),
])
def test_model_tiers_follow_the_largest_vram(vram_gib: int, first_model: str) -> None:
    small = gpus.Gpu("0000:02:00.0", "AMD", "0x1002", "0x1", "amdgpu", 2 * GiB)
    big = gpus.Gpu("0000:01:00.0", "NVIDIA", "0x10de", "0x2", "nvidia", vram_gib * GiB)
    rec = recommend([small, big])
    assert rec.models[0] == first_model and "nomic-embed-text" in rec.models
    assert "0000:01:00.0" in rec.reason or vram_gib <= 2


def test_no_dedicated_vram_means_api_only() -> None:
    assert recommend([]).models == ()
    igpu = gpus.Gpu("0000:00:02.0", "Intel", "0x8086", "0x1", "i915", None)
    assert recommend([igpu]).models == ()
    nodriver = gpus.Gpu("0000:01:00.0", "NVIDIA", "0x10de", "0x2", None, None)
    rec = recommend([nodriver])
    assert rec.models == () and "driver not loaded" in rec.reason
    assert TIERS[-1][0] == float("inf")


# --- memory encryption -------------------------------------------------------------------------

AMD = "processor\t: 0\nflags\t\t: fpu vme sme sev sev_es\n"
INTEL = "processor\t: 0\nflags\t\t: fpu vme tme\n"


def test_memory_encryption_support_and_activity() -> None:
    off = memcrypt.assess(AMD, "quiet", "x86/cpu: something\n")
    assert off.supported == ("AMD SME", "AMD SEV", "AMD SEV-ES") and off.active is False
    assert "mem_encrypt=on" in off.advice
    on = memcrypt.assess(AMD, "mem_encrypt=on", "Memory Encryption Features active: AMD SME\n")
    assert on.active is True and on.advice == "active"
    tme = memcrypt.assess(INTEL, "", None)
    assert tme.supported == ("Intel TME",) and tme.active is None and "firmware" in tme.advice
    assert memcrypt.assess("flags : fpu\n", "", "").supported == ()


def test_detect_on_this_host_is_consistent() -> None:
    """The whole detection on the real machine (read-only) and its two renderings."""
    hw = detect()
    doc = json.loads(hw.to_json())
    assert [d["path"] for d in doc["disks"]] == [d.path for d in hw.disks]
    assert all(d["candidate"] == (d["unusable"] is None) for d in doc["disks"])
    flags = memcrypt.cpu_flags(Path("/proc/cpuinfo").read_text())
    assert bool(hw.memory_encryption.supported) == bool(flags & set(memcrypt.FEATURES))
    text = describe(hw)
    assert text.startswith("Disks:") and "Memory encryption:" in text
