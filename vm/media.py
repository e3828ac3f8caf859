"""Update media: later versions of this tree (vm.builds.version) published with `anklume
publish` and carried on disk images, as a user's update stick or server would."""

from __future__ import annotations

import subprocess
from pathlib import Path

from anklume.vm.builds import anklume_exe

STICK_LABEL = "ANKLUME-UPD"  # updates/source_usb.py: the documented label
# Agent work is not what these boots are about: no domains, so the real health gate passes
# within seconds of Incus starting.
EMPTY_INFRA = """\
schema_version: 1
project_name: anklume
global:
  addressing:
    base_octet: 10
    zone_base: 100
domains: {}
"""


def bump(version: str, n: int) -> str:
    """`version` with its last number raised by n (0.1.0 -> 0.1.2)."""
    head, _, last = version.rpartition(".")
    return f"{head}.{int(last) + n}" if head else str(int(last) + n)


class PublishFailed(RuntimeError):
    pass


def publish(build_dir: Path, tree: Path) -> None:
    r = subprocess.run([anklume_exe(), "publish", "--build-dir", str(build_dir), "--out",
                        str(tree)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    if r.returncode != 0:
        raise PublishFailed(
            f"anklume publish {build_dir} failed ({r.returncode}):\n{r.stdout}{r.stderr}")


def ext4_disk(tree: Path, image: Path, label: str) -> Path:
    """A disk holding `tree` in an ext4 file system (what a user's stick would carry)."""
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) + 256 * 2**20
    image.unlink(missing_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(tree), str(image),
                    f"{size // 2**20}M"], check=True, timeout=600, stdin=subprocess.DEVNULL)
    return image


def fat_volume(files: dict[str, str], image: Path, label: str) -> Path:
    """A 4 MiB FAT volume without a partition table holding `files` (name -> text), as a
    user would prepare on any OS (mtools: no loop device, no root)."""
    image.unlink(missing_ok=True)
    subprocess.run(["mformat", "-i", str(image), "-C", "-T", "8192", "-v", label, "::"],
                   check=True, timeout=60, stdin=subprocess.DEVNULL)
    for name, text in files.items():
        subprocess.run(["mcopy", "-i", str(image), "-", f"::{name}"], input=text.encode(),
                       check=True, timeout=60)
    return image


def second_disk_args(image: Path) -> list[str]:
    """`image` (qcow2) as one more virtio disk, never booted from: another stick left in."""
    return ["-drive", f"if=none,id=twin-drv,format=qcow2,file={image}",
            "-device", "virtio-blk-pci,drive=twin-drv,id=twin"]


def usb_stick_args(image: Path) -> list[str]:
    return ["-device", "qemu-xhci,id=xhci-upd",
            "-drive", f"if=none,id=upd-drv,format=raw,readonly=on,file={image}",
            "-device", "usb-storage,bus=xhci-upd.0,drive=upd-drv,id=updstick,removable=on"]


def plant_esp_credential(image: Path, name: str, text: str) -> None:
    """What someone holding the stick can put on its ESP: a credential that systemd-stub passes
    to the booted system (loader/credentials/<name>.cred), "encrypted" with the null key, the
    only key anyone can use without this machine's TPM. A raw disk image."""
    import tempfile

    from anklume.vm import disk

    with tempfile.TemporaryDirectory(prefix="anklume-cred-") as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        src.write_text(text)
        subprocess.run(["systemd-creds", "encrypt", "--with-key=tpm2-absent", f"--name={name}",
                        str(src), str(out)], check=True, capture_output=True, timeout=60)
        esp = disk.Esp(image)
        if "credentials" not in esp.ls("/loader"):
            esp.mkdir("/loader/credentials")
        esp.write(f"/loader/credentials/{name}.cred", out.read_bytes())
