"""Private copies of the image for one boot, and the tampering some tests do to them.

The built image is never modified: unmodified boots get a qcow2 overlay (instant), tampered
boots a sparse raw copy. The partition table is read here in Python (GPT is simple), so the
tests need neither sfdisk nor root-only loop devices on the host.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

# GPT partition type GUIDs (Discoverable Partitions Specification, x86-64).
ESP = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
USR = uuid.UUID("8484680c-9521-48c6-9c11-b0720656f69e")
USR_VERITY = uuid.UUID("77ff5f63-e7b6-4633-acf4-1565b864c0e6")
USR_VERITY_SIG = uuid.UUID("e7bb33fb-06cf-4e81-8273-e543b413e2e2")


@dataclass(frozen=True)
class Partition:
    number: int
    type: uuid.UUID
    uuid: uuid.UUID
    label: str
    offset: int  # bytes from the start of the disk
    size: int


def partitions(image: Path) -> list[Partition]:
    """The GPT entries of a raw disk image, in table order (unused entries skipped)."""
    with image.open("rb") as f:
        for sector in (512, 4096):
            f.seek(sector)
            hdr = f.read(92)
            if hdr[:8] == b"EFI PART":
                break
        else:
            raise ValueError(f"{image}: no GPT header")
        entries_lba, count, entry_size = struct.unpack_from("<QII", hdr, 72)
        f.seek(entries_lba * sector)
        table = f.read(count * entry_size)
    parts = []
    for i in range(count):
        e = table[i * entry_size : (i + 1) * entry_size]
        ptype = uuid.UUID(bytes_le=e[:16])
        if ptype.int == 0:
            continue
        first, last = struct.unpack_from("<QQ", e, 32)
        label = e[56:128].decode("utf-16-le").rstrip("\0")
        parts.append(
            Partition(
                number=i + 1,
                type=ptype,
                uuid=uuid.UUID(bytes_le=e[16:32]),
                label=label,
                offset=first * sector,
                size=(last - first + 1) * sector,
            )
        )
    return parts


def find_partition(image: Path, ptype: uuid.UUID) -> Partition:
    """The first partition of a type: for usr that is slot A (repart defines A before B)."""
    for p in partitions(image):
        if p.type == ptype:
            return p
    raise LookupError(f"{image}: no partition of type {ptype}")


# The disk the image is written to in a VM: like the USB stick or small disk it is flashed to on
# real hardware, larger than the image, so first-boot systemd-repart has room for slot B and
# the persistent partition (a disk exactly the image's size makes it fail, rightly).
TARGET_DISK_SIZE = 8 * 1024**3


def overlay(base: Path, dest: Path, size: int = TARGET_DISK_SIZE) -> Path:
    """A qcow2 overlay on the (read-only) built image, `size` bytes large: the guest's writes
    stay in `dest`, and the space past the image reads as zeroes, like a freshly flashed disk."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base.resolve()),
         str(dest), str(max(size, base.stat().st_size))],
        check=True,
        timeout=60,
    )  # fmt: skip
    return dest


def raw_copy(base: Path, dest: Path, size: int = TARGET_DISK_SIZE) -> Path:
    """A sparse full copy, for tests that change bytes (mtools and offsets need a raw file),
    grown (sparsely) to `size` like the overlay."""
    subprocess.run(
        ["cp", "--sparse=always", "--reflink=auto", str(base), str(dest)], check=True, timeout=300
    )
    if dest.stat().st_size < size:
        os.truncate(dest, size)
    return dest


# --- ESP (FAT) edits with mtools ---------------------------------------------------------------


class Esp:
    """The ESP inside a raw image, through mtools' `image@@offset` syntax (no loop device)."""

    def __init__(self, image: Path) -> None:
        self.part = find_partition(image, ESP)
        self.target = f"{image}@@{self.part.offset}"

    def _m(self, *argv: str, input: bytes | None = None) -> bytes:
        # MTOOLS_SKIP_CHECK: the FAT made by mkfs.vfat inside a partition has geometry values
        # that mtools would otherwise refuse.
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        r = subprocess.run(
            [argv[0], "-i", self.target, *argv[1:]],
            input=input,
            capture_output=True,
            env=env,
            timeout=120,
        )
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.decode(errors='replace').strip()}")
        return r.stdout

    def ls(self, path: str) -> list[str]:
        out = self._m("mdir", "-b", f"::{path}").decode()
        return [line.rstrip("/").rsplit("/", 1)[-1] for line in out.splitlines() if line.strip()]

    def read(self, path: str) -> bytes:
        return self._m("mtype", f"::{path}")

    def write(self, path: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile(prefix="anklume-esp-") as tmp:
            tmp.write(data)
            tmp.flush()
            self._m("mcopy", "-o", tmp.name, f"::{path}")

    def delete(self, path: str) -> None:
        self._m("mdel", f"::{path}")

    def mkdir(self, path: str) -> None:
        self._m("mmd", f"::{path}")


# --- PE (UKI) ----------------------------------------------------------------------------------

_SECURITY_DIR = 4  # IMAGE_DIRECTORY_ENTRY_SECURITY: where Authenticode signatures live


def strip_signature(pe: bytes) -> bytes:
    """The same PE image without its Authenticode signature.

    Used to make an unsigned twin of the signed UKI: identical kernel, initrd and command line,
    so the only reason the firmware can have to refuse it is the missing signature.
    """
    if pe[:2] != b"MZ":
        raise ValueError("not a PE image")
    (hdr,) = struct.unpack_from("<I", pe, 0x3C)
    if pe[hdr : hdr + 4] != b"PE\0\0":
        raise ValueError("not a PE image")
    opt = hdr + 24
    (magic,) = struct.unpack_from("<H", pe, opt)
    dirs = opt + (112 if magic == 0x20B else 96)  # PE32+ or PE32
    entry = dirs + 8 * _SECURITY_DIR
    offset, size = struct.unpack_from("<II", pe, entry)
    out = bytearray(pe)
    struct.pack_into("<II", out, entry, 0, 0)
    if size and offset + size >= len(pe.rstrip(b"\0")):
        # The certificate table sits at the end of the file: drop it, keep the 8-byte alignment.
        del out[offset:]
    return bytes(out)


def is_signed(pe: bytes) -> bool:
    (hdr,) = struct.unpack_from("<I", pe, 0x3C)
    opt = hdr + 24
    (magic,) = struct.unpack_from("<H", pe, opt)
    entry = opt + (112 if magic == 0x20B else 96) + 8 * _SECURITY_DIR
    size: int = struct.unpack_from("<II", pe, entry)[1]
    return size > 0


# --- corruption --------------------------------------------------------------------------------


def flip_bytes(image: Path, offset: int, length: int = 4) -> tuple[bytes, bytes]:
    """XOR `length` bytes at `offset` with 0xff in place; returns (before, after)."""
    with image.open("r+b") as f:
        f.seek(offset)
        before = f.read(length)
        after = bytes(b ^ 0xFF for b in before)
        f.seek(offset)
        f.write(after)
        f.flush()
        os.fsync(f.fileno())
    return before, after


def usr_corruption_offset(image: Path) -> tuple[int, str]:
    """Where to flip bytes in slot A's /usr so that the change is certainly read at boot but
    would go unnoticed without verity. Returns (absolute offset, why)."""
    part = find_partition(image, USR)
    with image.open("rb") as f:
        f.seek(part.offset)
        head = f.read(4096)
    if head[:4] == b"hsqs":
        # squashfs superblock: bytes 8..11 are mkfs_time, read by every mount and checked by
        # nothing in squashfs itself, so only dm-verity can notice the change.
        return part.offset + 8, "squashfs superblock mkfs_time"
    # erofs (superblock at 1024) or anything else: the first data block is read on mount, and
    # bytes 512..515 lie in erofs' unused head padding, which erofs never checks.
    return part.offset + 512, "first data block (filesystem head padding)"



IMPOSTOR_LABEL = "anklume-persist"
IMPOSTOR_MARKER = "IMPOSTOR"
LINUX_DATA = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")


def write_gpt(image: Path, parts: list[tuple[uuid.UUID, str, int, int]]) -> None:
    """Write a GPT (primary and backup, 512-byte sectors) for `parts`: (type, label, first LBA,
    last LBA). A few lines of Python instead of sfdisk, which this host does not have."""
    sectors = image.stat().st_size // 512
    entries = bytearray(128 * 128)
    for i, (ptype, label, first, last) in enumerate(parts):
        entries[i * 128 : (i + 1) * 128] = (
            ptype.bytes_le + uuid.uuid4().bytes_le + struct.pack("<QQQ", first, last, 0)
            + label.encode("utf-16-le").ljust(72, b"\0")
        )  # fmt: skip
    entries_crc = zlib.crc32(entries)
    disk_guid = uuid.uuid4().bytes_le

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        def pack(crc: int) -> bytes:
            return (b"EFI PART" + struct.pack("<IIII", 0x00010000, 92, crc, 0)
                    + struct.pack("<QQQQ", current, backup, 34, sectors - 34) + disk_guid
                    + struct.pack("<QIII", entries_lba, 128, 128, entries_crc))  # fmt: skip
        return pack(zlib.crc32(pack(0))).ljust(512, b"\0")

    # Protective MBR: one 0xEE partition over the whole disk.
    mbr = bytearray(512)
    mbr[446:462] = struct.pack("<8BII", 0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1,
                               min(sectors - 1, 0xFFFFFFFF))  # fmt: skip
    mbr[510:512] = b"\x55\xaa"
    with image.open("r+b") as f:
        f.write(mbr)
        f.write(header(1, sectors - 1, 2))
        f.write(entries)
        f.seek((sectors - 33) * 512)
        f.write(entries)
        f.write(header(sectors - 1, 1, sectors - 33))


def impostor_persist_disk(dest: Path, size: int = 64 * 1024**2) -> Path:
    """A second "anklume stick" as far as labels go: a GPT disk whose one partition is labelled
    anklume-persist and holds an ext4 with a file named IMPOSTOR. The appliance must keep using
    the persistent partition of the disk it booted from, never this one."""
    first, last = 2048, size // 512 - 2048
    with dest.open("wb") as f:
        f.truncate(size)
    write_gpt(dest, [(LINUX_DATA, IMPOSTOR_LABEL, first, last)])
    with tempfile.TemporaryDirectory(prefix="anklume-impostor-") as tmp:
        (Path(tmp) / IMPOSTOR_MARKER).write_text("not the boot disk's persistent partition\n")
        subprocess.run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-d", tmp, "-E", f"offset={first * 512}",
             str(dest), f"{(last - first + 1) // 2}k"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    return dest


def flatten(image: Path, dest: Path) -> Path:
    """A raw copy of a disk in any format QEMU reads (an overlay with its backing image): the
    form the partition edits below work on."""
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(dest)], check=True,
                   capture_output=True, timeout=600)
    return dest


def plant(image: Path, label: str, files: dict[str, str]) -> None:
    """Write `files` (path inside the file system -> text) into the ext4 partition labelled
    `label` of a raw disk, as someone holding the powered-off stick could: debugfs on the
    partition's byte offset, no loop device, no root. Read back to be sure it took."""
    part = next((p for p in partitions(image) if p.label == label), None)
    if part is None:
        raise LookupError(f"{image}: no partition labelled {label}")
    dev = f"{image}?offset={part.offset}"
    cmds = []
    with tempfile.TemporaryDirectory(prefix="anklume-plant-") as tmp:
        for i, (path, text) in enumerate(files.items()):
            src = Path(tmp) / str(i)
            src.write_text(text)
            parts = path.strip("/").split("/")
            cmds += [f"mkdir {'/'.join(parts[:n])}" for n in range(1, len(parts))]
            cmds += [f"rm {path}", f"write {src} {path}"]
        subprocess.run(["debugfs", "-w", "-f", "-", dev], input="\n".join(cmds) + "\n",
                       text=True, capture_output=True, check=True, timeout=120)
    for path, text in files.items():
        got = subprocess.run(["debugfs", "-R", f"cat {path}", dev], capture_output=True,
                             text=True, check=True, timeout=60).stdout
        if got != text:
            raise RuntimeError(f"{image}: {path} was not written into {label}")
