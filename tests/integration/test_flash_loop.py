"""`anklume flash` against real block devices: loop devices over sparse files (needs root).

Every refusal is checked by hashing the device before and after: "nothing written" is measured,
not assumed. Loop devices count as fixed disks, so the writes that should happen pass --force.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from anklume.image import flash_write
from anklume.image.flash import FlashRefused

MiB = 1024**2
ANKLUME = Path(sys.executable).parent / "anklume"
ESP_TYPE = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")


@pytest.fixture(autouse=True)
def _root() -> None:
    # Fail, not skip: a skipped device suite would look green.
    if os.geteuid() != 0:
        pytest.fail("flash loop-device tests need root (losetup, mount)", pytrace=False)


def _gpt(f, size: int) -> None:
    """A valid GPT (protective MBR, primary and backup headers) with one 16 MiB ESP."""
    sectors = size // 512
    entries = bytearray(128 * 128)
    struct.pack_into("<16s16sQQQ72s", entries, 0, ESP_TYPE.bytes_le, uuid.uuid4().bytes_le,
                     2048, 2048 + 16 * MiB // 512 - 1, 0, "esp".encode("utf-16-le"))
    disk = uuid.uuid4().bytes_le

    def header(mine: int, other: int, table: int) -> bytes:
        h = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, mine,
                                  other, 34, sectors - 34, disk, table, 128, 128,
                                  zlib.crc32(entries)))
        struct.pack_into("<I", h, 16, zlib.crc32(h))
        return bytes(h)

    mbr = bytearray(512)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1,
                               min(sectors - 1, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    for offset, data in ((0, bytes(mbr)), (512, header(1, sectors - 1, 2)), (1024, entries),
                         ((sectors - 33) * 512, entries),
                         ((sectors - 1) * 512, header(sectors - 1, 1, sectors - 33))):
        f.seek(offset)
        f.write(data)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A 64 MiB sparse "appliance image": a GPT and a few non-zero blocks, holes between."""
    path = tmp_path / "anklume_test.raw"
    with path.open("wb") as f:
        f.truncate(64 * MiB)
        _gpt(f, 64 * MiB)
        for off in (3 * MiB, 17 * MiB + 4095, 40 * MiB):
            f.seek(off)
            f.write(os.urandom(8192))
    assert _blkid_pttype(path) == "gpt"  # the synthetic table is one tools recognise
    return path


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Make loop devices over sparse files, optionally full of garbage; always detached."""
    attached: list[str] = []

    def make(size: int, garbage: bool = True) -> str:
        backing = tmp_path / f"disk{len(attached)}.img"
        with backing.open("wb") as f:
            f.truncate(size)
            if garbage:  # like a used stick: no zeros where the image has holes
                f.seek(0)
                for _ in range(size // MiB):
                    f.write(os.urandom(MiB))
        dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                             capture_output=True, text=True).stdout.strip()
        attached.append(dev)
        return dev

    yield make
    for dev in attached:
        subprocess.run(["losetup", "--detach", dev], check=False)


def _blkid_pttype(path: Path | str) -> str:
    return subprocess.run(["blkid", "-p", "-o", "value", "-s", "PTTYPE", str(path)],
                          capture_output=True, text=True).stdout.strip()


def _sha(path: Path | str) -> str:
    """SHA-256 of a whole file or device."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def flash(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ANKLUME), "flash", *args], capture_output=True, text=True,
                          input=stdin, timeout=120)


def test_flash_overwrites_a_used_stick_byte_for_byte(image: Path, loop) -> None:
    dev = loop(96 * MiB)
    with open(dev, "rb") as f:
        f.seek(64 * MiB)
        tail = f.read()
    r = flash(str(image), dev, "--force", "--yes")
    assert r.returncode == 0, r.stderr
    with open(dev, "rb") as f:
        written = f.read(64 * MiB)
        assert f.read() == tail  # past the image's end nothing is touched
    assert written == image.read_bytes()  # holes included: the garbage under them is gone
    assert f"Verified: SHA-256 {_sha(image)} of the first {64 * MiB} bytes of {dev}" in r.stdout
    assert "100%" in r.stderr and "MiB/s" in r.stderr
    assert _blkid_pttype(dev) == "gpt"
    again = flash(str(image), dev, "--force")  # no terminal: shows the device, then refuses
    assert again.returncode == 1 and "partition table: gpt" in again.stdout


def test_yes_piped_into_stdin_is_not_a_confirmation(image: Path, loop) -> None:
    """Without a terminal only --yes confirms: a script's stray input never erases a disk."""
    dev = loop(96 * MiB, garbage=False)
    subprocess.run(["mkfs.ext4", "-q", "-L", "olddata", dev], check=True)
    before = _sha(dev)
    r = flash(str(image), dev, "--force", stdin="yes\n")
    assert r.returncode == 1 and "no terminal to confirm on" in r.stderr
    # What would have been erased is shown all the same, found by probing the device itself.
    assert f"{dev}  96 MiB" in r.stdout and "file system on the whole disk: ext4" in r.stdout
    assert _sha(dev) == before


def test_a_mounted_device_is_refused_and_left_alone(image: Path, loop, tmp_path: Path) -> None:
    dev = loop(96 * MiB, garbage=False)
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    before = _sha(dev)
    # Read-only, so the file system itself writes nothing (a rw mount updates its superblock).
    subprocess.run(["mount", "-o", "ro", dev, str(mnt)], check=True)
    try:
        r = flash(str(image), dev, "--force", "--yes")
        assert r.returncode == 1
        assert f"is mounted ({mnt})" in r.stderr and "unmount it first" in r.stderr
        assert "Traceback" not in r.stderr
        # Even past our checks, the kernel's exclusive open is the last guard.
        with pytest.raises(FlashRefused, match="the kernel reports it in use"):
            flash_write.write(str(image), 64 * MiB, dev, False)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert _sha(dev) == before


def test_a_device_smaller_than_the_image_is_refused(image: Path, loop) -> None:
    dev = loop(32 * MiB)
    before = _sha(dev)
    r = flash(str(image), dev, "--force", "--yes")
    assert r.returncode == 1 and "is too small" in r.stderr
    assert _sha(dev) == before


def test_a_loop_device_needs_force(image: Path, loop) -> None:
    dev = loop(96 * MiB)
    before = _sha(dev)
    r = flash(str(image), dev, "--yes")
    assert r.returncode == 1 and "loop device" in r.stderr and "--force" in r.stderr
    assert _sha(dev) == before


def test_a_regular_file_target(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "vm.raw"
    r = flash(str(image), str(out), "--yes")  # a new file destroys nothing: no --force
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == image.read_bytes() and "Verified: SHA-256" in r.stdout
    out.write_bytes(b"keep me")
    r = flash(str(image), str(out), "--yes")
    assert r.returncode == 1 and "pass --force to overwrite" in r.stderr
    assert out.read_bytes() == b"keep me"
    r = flash(str(image), str(out), "--yes", "--force")
    assert r.returncode == 0 and _sha(out) == _sha(image)


def test_without_device_loop_devices_are_not_offered(image: Path, loop) -> None:
    dev = loop(96 * MiB, garbage=False)
    r = flash(str(image))
    assert r.returncode == 0, r.stderr
    assert dev not in r.stdout
    assert "Disks that can take the image" in r.stdout or "--wait" in r.stdout


def test_the_wait_monitor_wakes_on_a_new_block_device(loop) -> None:
    """Without udevd (this host) the monitor falls back to kernel uevents; attaching a loop
    device must wake it, or --wait would only ever notice a stick by polling."""
    from anklume.image import flash_devices

    monitor = flash_devices.udev_monitor()
    assert monitor is not None
    dev = loop(8 * MiB, garbage=False)
    names = set()
    for _ in range(10):
        event = monitor.poll(timeout=1)
        if event is not None:
            names.add(event.sys_name)
        if Path(dev).name in names:
            break
    assert Path(dev).name in names
