"""`anklume flash`: refusals, listing and confirmation on recorded lsblk trees and a fake /sys;
writing and reading back on regular files; a vanishing device injected into the writer."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from anklume.image import flash, flash_devices, flash_run, flash_write
from anklume.image.flash import FlashRefused, Target

MiB = 1024**2
GiB = 1024**3
FIXTURES = Path(__file__).parent / "fixtures" / "lsblk"
IMAGE_SIZE = 800 * MiB  # about the real image's apparent size
SIZE = 13 * MiB  # the synthetic images written here


@pytest.fixture(autouse=True)
def _no_host_udev(monkeypatch: pytest.MonkeyPatch) -> None:
    # Recorded trees name disks (sda, sdc) the host may also have: keep udev out of them.
    monkeypatch.setattr(flash_devices, "udev_identity", lambda name: (None, None))


def appliance() -> dict[str, Target]:
    doc = json.loads((FIXTURES / "appliance-on-usb.json").read_text())
    return {t.path: t for t in flash_devices.scan(doc, mountinfo="", sys_root=Path("/nonexistent"))}


# --- refusals ----------------------------------------------------------------------------------


def test_the_running_systems_stick_is_refused_even_with_force() -> None:
    stick = appliance()["/dev/sda"]
    assert stick.stick_like and "/usr" in stick.mounts  # /usr through dm-verity, from lsblk
    for force in (False, True):
        reasons = flash.refusals(stick, IMAGE_SIZE, force=force)
        assert any("holds the running system" in r and "never written" in r for r in reasons)
    with pytest.raises(FlashRefused, match="nothing was written"):
        flash.plan("img.raw", IMAGE_SIZE, stick, force=True)


def test_a_mounted_stick_is_refused_even_with_force() -> None:
    mounted = appliance()["/dev/sdd"]
    assert mounted.stick_like and mounted.boot is None
    for force in (False, True):
        (reason,) = flash.refusals(mounted, IMAGE_SIZE, force=force)
        assert "mounted (/media/stick): unmount it first" in reason


def test_a_stick_smaller_than_the_image_is_refused_even_with_force() -> None:
    tiny = appliance()["/dev/sdc"]  # 1 GiB
    assert flash.refusals(tiny, GiB) == []  # exactly the image's size is enough
    (reason,) = flash.refusals(tiny, GiB + 512, force=True)
    assert "too small" in reason and f"{GiB} < {GiB + 512} bytes" in reason


def test_an_internal_disk_needs_force() -> None:
    internal = appliance()["/dev/nvme0n1"]
    assert not internal.stick_like
    (reason,) = flash.refusals(internal, IMAGE_SIZE)
    assert "not removable and not on USB" in reason and "--force" in reason
    p = flash.plan("img.raw", IMAGE_SIZE, internal, force=True)
    assert p.warnings and "not a removable disk" in p.warnings[0]


def test_a_loop_device_counts_as_a_fixed_disk() -> None:
    loop = Target("/dev/loop3", "loop", size=GiB)
    (reason,) = flash.refusals(loop, IMAGE_SIZE)
    assert "loop device" in reason and "--force" in reason
    assert flash.refusals(loop, IMAGE_SIZE, force=True) == []


def test_partitions_read_only_stacked_and_unknown_targets() -> None:
    (part,) = flash.refusals(Target("/dev/sdb1", "part", GiB, parent="/dev/sdb"), 1, force=True)
    assert "is a partition" in part and "/dev/sdb" in part
    ro = Target("/dev/sdb", "disk", 8 * GiB, removable=True, read_only=True)
    assert flash.refusals(ro, IMAGE_SIZE, force=True) == ["/dev/sdb is read-only"]
    held = Target("/dev/sdb", "disk", 8 * GiB, usb=True, holders=("luks-1",))
    assert "in use by luks-1" in flash.refusals(held, IMAGE_SIZE, force=True)[0]
    assert "has no medium" in flash.refusals(Target("/dev/loop7", "absent"), 1, True)[0]
    assert "not a whole disk" in flash.refusals(Target("/dev/null", "other"), 1, True)[0]


def test_file_targets_new_is_allowed_existing_needs_force(tmp_path: Path) -> None:
    new = flash_devices.target(str(tmp_path / "vm.raw"))
    assert new.kind == "new-file" and flash.refusals(new, IMAGE_SIZE) == []
    (tmp_path / "old.raw").write_bytes(b"data")
    old = flash_devices.target(str(tmp_path / "old.raw"))
    assert old.kind == "file"
    assert "pass --force to overwrite" in flash.refusals(old, IMAGE_SIZE)[0]
    assert flash.refusals(old, IMAGE_SIZE, force=True) == []
    assert flash_devices.target(str(tmp_path)).kind == "other"  # a directory
    assert flash_devices.target(str(tmp_path / "no" / "dir.raw")).kind == "other"
    assert flash_devices.target("/dev/does-not-exist").kind == "other"  # never create in /dev


def test_writing_the_image_onto_itself_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "a.raw"
    image.write_bytes(b"x" * 4096)
    with pytest.raises(FlashRefused, match="the image itself"):
        flash_run.flash_image(image, str(image), force=True, yes=True, echo=_quiet,
                              ask=_never)
    assert image.read_bytes() == b"x" * 4096


# --- the running system's disk through /sys and mountinfo --------------------------------------


def _node(sys_root: Path, rel: str, devnum: str, size: int = 0, removable: int = 0,
          partition: bool = False) -> Path:
    d = sys_root / "devices" / rel
    d.mkdir(parents=True)
    (d / "size").write_text(f"{size // 512}\n")
    (d / "removable").write_text(f"{removable}\n")
    if partition:
        (d / "partition").write_text("1\n")
    else:
        (sys_root / "block").mkdir(exist_ok=True)
        (sys_root / "block" / d.name).symlink_to(d)
    (sys_root / "dev" / "block").mkdir(parents=True, exist_ok=True)
    (sys_root / "dev" / "block" / devnum).symlink_to(d)
    return d


USB_PORT = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block"


def fake_sys(root: Path) -> Path:
    """An appliance booted from a USB stick (sda, /usr on dm-verity over sda2, / on tmpfs),
    an internal NVMe disk with a partition mounted at /home, and a second stick sdb."""
    sda = _node(root, f"{USB_PORT}/sda", "8:0", 32 * GiB, removable=1)
    sda2 = _node(root, f"{USB_PORT}/sda/sda2", "8:2", GiB, partition=True)
    dm = _node(root, "virtual/block/dm-0", "253:0", GiB)
    (dm / "slaves").mkdir()
    (dm / "slaves" / "sda2").symlink_to(sda2)
    assert sda.is_dir()
    _node(root, "pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1", "259:0", 512 * GiB)
    _node(root, "pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1/nvme0n1p1", "259:1", 512 * GiB,
          partition=True)
    _node(root, "pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0/block/sdb",
          "8:16", 16 * GiB)  # USB, but its firmware does not say removable
    return root


MOUNTINFO = """\
21 1 0:30 / / rw,relatime - tmpfs tmpfs rw
22 21 253:0 / /usr ro,relatime - squashfs /dev/mapper/usr ro
23 21 259:1 / /home/me\\040too rw,relatime - ext4 /dev/nvme0n1p1 rw
24 21 0:22 / /sys rw,relatime - sysfs sysfs rw
"""


def test_system_mounts_map_to_their_disk_through_dm_slaves(tmp_path: Path) -> None:
    root = fake_sys(tmp_path)
    assert flash_devices.disks_under("253:0", root) == {"sda"}
    assert flash_devices.disks_under("259:1", root) == {"nvme0n1"}
    assert flash_devices.disks_under("0:30", root) == set()  # tmpfs
    reasons = flash_devices.boot_reasons({}, MOUNTINFO, root)
    assert reasons == {"sda": "/usr is mounted from it"}
    mounted = flash_devices.mounts_by_devnum(MOUNTINFO)
    assert mounted["259:1"] == ["/home/me too"]


def test_scan_refuses_what_mountinfo_shows_even_when_lsblk_does_not(tmp_path: Path) -> None:
    """lsblk without mount points (as in a mount namespace it cannot see): mountinfo and /sys
    still find the running system's stick and the mounted internal disk."""
    root = fake_sys(tmp_path)
    doc = {"blockdevices": [
        {"name": "sda", "type": "disk", "size": 32 * GiB, "rm": True, "tran": "usb",
         "children": [{"name": "sda2", "type": "part", "size": GiB}]},
        {"name": "nvme0n1", "type": "disk", "size": 512 * GiB, "rm": False,
         "children": [{"name": "nvme0n1p1", "type": "part", "size": 512 * GiB,
                       "fstype": "ext4"}]},
        {"name": "sdb", "type": "disk", "size": 16 * GiB, "rm": False, "model": "Flash Drive",
         "serial": "0123ABC"}]}
    found = {t.path: t for t in flash_devices.scan(doc, MOUNTINFO, root)}
    assert found["/dev/sda"].boot == "/usr is mounted from it"
    assert "/home/me too" in found["/dev/nvme0n1"].mounts
    sdb = found["/dev/sdb"]
    assert sdb.usb and not sdb.removable and sdb.stick_like  # USB from its /sys path
    assert [t.path for t in flash.candidates(list(found.values()), IMAGE_SIZE)] == ["/dev/sdb"]


def test_the_esp_the_boot_loader_came_from(tmp_path: Path) -> None:
    efivars = tmp_path / "efivars"
    efivars.mkdir()
    uuid = "5C1E2F3A-0000-4000-8000-00000000000A"
    (efivars / flash_devices.LOADER_PARTUUID).write_bytes(
        b"\x06\0\0\0" + (uuid + "\0").encode("utf-16-le"))
    assert flash_devices.booted_esp_partuuid(efivars) == uuid.lower()
    assert flash_devices.booted_esp_partuuid(tmp_path / "none") is None
    doc = {"blockdevices": [{"name": "sdb", "type": "disk", "size": 16 * GiB, "rm": True,
                             "children": [{"name": "sdb1", "type": "part", "size": 512 * MiB,
                                           "partuuid": uuid.lower(), "mountpoints": [None]}]}]}
    (t,) = flash_devices.scan(doc, "", tmp_path, esp_partuuid=uuid.lower())
    assert t.boot == "the boot loader started from its ESP" and t.mounts == ()
    assert "never written" in flash.refusals(t, IMAGE_SIZE, force=True)[0]


# --- listing and waiting -----------------------------------------------------------------------


def test_listing_offers_only_free_sticks_with_model_size_serial() -> None:
    targets = list(appliance().values())
    assert [t.path for t in flash.candidates(targets, IMAGE_SIZE)] == ["/dev/sdc"]
    text = "\n".join(flash.listing(targets, IMAGE_SIZE))
    assert "/dev/sdc  1.0 GiB  Tiny, usb, removable" in text
    assert "anklume flash IMAGE /dev/sdc" in text
    assert "/dev/nvme0n1" not in text and "/dev/sdd" not in text
    none = "\n".join(flash.listing(targets, 2 * GiB))
    assert "No removable or USB disk" in none and "--wait" in none
    assert "/dev/sdd: /dev/sdd is mounted (/media/stick)" in none  # why each stick is out


def test_describe_shows_what_will_be_erased() -> None:
    text = "\n".join(flash.describe(appliance()["/dev/sdd"]))
    assert "/dev/sdd  29.8 GiB  Cruzer, serial 200533, usb, removable" in text
    assert "partition table: dos" in text
    assert "sdd1  29.8 GiB  exfat mounted at /media/stick" in text


def test_wait_polls_sys_block_when_no_udev_runs(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_sys(tmp_path)
    reader = _node(root, f"{USB_PORT.replace('2-1', '2-3')}/sdc", "8:32", 0, removable=1)
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:  # a card goes into the empty reader: a stick with a medium now
            (reader / "size").write_text(f"{8 * GiB // 512}\n")

    monkeypatch.setattr(flash_devices.time, "sleep", sleep)
    assert flash_devices.wait_for_stick(60, root, interval=0.25) == "sdc"  # not sda/sdb
    assert naps == [0.25, 0.25]


def test_wait_gives_up_after_its_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(flash_devices.time, "sleep", sleep)
    with pytest.raises(flash_devices.NoStickArrived, match="within 3 s") as e:
        flash_devices.wait_for_stick(3, fake_sys(tmp_path), interval=1, clock=lambda: now[0])
    assert e.value.exit_code == 75 and now[0] == 3


# --- confirmation ------------------------------------------------------------------------------


def _quiet(*args: object, **kwargs: object) -> None:
    pass


def _never(question: str) -> str:
    raise AssertionError("asked although it must not")


def _image(tmp_path: Path, size: int = SIZE) -> Path:
    """A sparse image: data in its first chunk (4 MiB), none in the second, a byte in the
    third and its last byte."""
    image = tmp_path / "anklume_test.raw"
    with image.open("wb") as f:
        f.truncate(size)
        for off in (0, 8 * MiB + 3, size - 1):
            f.seek(off)
            f.write(b"\xa5")
    return image


def test_confirmation_rule() -> None:
    assert flash.confirmation(yes=True, interactive=False) is False
    assert flash.confirmation(yes=False, interactive=True) is True
    with pytest.raises(FlashRefused, match="no terminal to confirm on and --yes not given"):
        flash.confirmation(yes=False, interactive=False)


def test_no_terminal_and_no_yes_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    with pytest.raises(FlashRefused, match="no terminal"):
        flash_run.flash_image(_image(tmp_path), str(out), force=False, yes=False, echo=_quiet,
                              ask=_never, interactive=lambda: False)
    assert not out.exists()


def test_anything_but_yes_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    shown: list[str] = []
    with pytest.raises(FlashRefused, match="not confirmed"):
        flash_run.flash_image(_image(tmp_path), str(out), force=False, yes=False,
                              echo=lambda s="", **k: shown.append(s), ask=lambda q: "y",
                              interactive=lambda: True)
    assert not out.exists()
    assert any("will be created" in s for s in shown)


def test_typed_yes_writes_and_verifies(tmp_path: Path) -> None:
    image, out = _image(tmp_path), tmp_path / "out.raw"
    shown: list[str] = []
    questions: list[str] = []
    flash_run.flash_image(image, str(out), force=False, yes=False,
                          echo=lambda s="", **k: shown.append(s),
                          ask=lambda q: questions.append(q) or "yes", interactive=lambda: True)
    assert questions == [f"Type yes to write {out}"]
    assert out.read_bytes() == image.read_bytes()
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    assert f"Verified: SHA-256 {sha} of the first {SIZE} bytes of {out}" in shown[-1]


def test_a_target_that_changes_while_asking_is_not_written(tmp_path: Path) -> None:
    image = _image(tmp_path)
    disks = iter([Target("/dev/sdz", "disk", 8 * GiB, serial="A", usb=True),
                  Target("/dev/sdz", "disk", 16 * GiB, serial="B", usb=True)])
    with pytest.raises(FlashRefused, match="changed while waiting"):
        flash_run.flash_image(image, "/dev/sdz", force=False, yes=True, echo=_quiet,
                              ask=_never, probe=lambda path: next(disks))


def test_cli_without_a_terminal_refuses_with_exit_1(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out.raw"
    code = _cli(monkeypatch, ["flash", str(_image(tmp_path)), str(out)])
    assert code == 1 and not out.exists()
    assert "error: no terminal to confirm on" in capsys.readouterr().err


def test_debug_prints_the_traceback_it_promises(tmp_path: Path, monkeypatch, capsys) -> None:
    import logging

    level = logging.getLogger("anklume").level
    try:
        code = _cli(monkeypatch, ["--debug", "flash", str(_image(tmp_path)), str(tmp_path / "o")])
    finally:
        logging.getLogger("anklume").setLevel(level)
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in err and "FlashRefused" in err, err
    assert err.index("Traceback") < err.index("error: no terminal to confirm on"), err
    code = _cli(monkeypatch, ["flash", str(_image(tmp_path)), str(tmp_path / "o")])
    assert code == 1 and "Traceback" not in capsys.readouterr().err


def _cli(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> int:
    from anklume import cli

    monkeypatch.setattr(sys, "argv", ["anklume", *argv])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    with pytest.raises(SystemExit) as e:
        cli.run()
    return int(e.value.code or 0)


# --- writing -----------------------------------------------------------------------------------


def test_a_file_target_equals_the_image_and_keeps_its_holes(tmp_path: Path) -> None:
    image, out = _image(tmp_path), tmp_path / "out.raw"
    out.write_bytes(b"\xff" * (12 * MiB))  # longer and full of old data
    done: list[int] = []
    w = flash_write.write(str(image), SIZE, str(out), True, lambda d, t, s: done.append(d))
    assert out.read_bytes() == image.read_bytes()
    assert out.stat().st_blocks * 512 <= SIZE - 4 * MiB  # the zero chunk was skipped
    assert done == [4 * MiB, 8 * MiB, 12 * MiB, SIZE]
    assert flash_write.verify(str(out), w) == hashlib.sha256(image.read_bytes()).hexdigest()


def test_a_device_target_gets_every_byte_written(tmp_path: Path, monkeypatch) -> None:
    """On a device the holes are written as zeros (old data must go): count the writes."""
    image, out = _image(tmp_path), tmp_path / "dev"
    out.write_bytes(b"\xff" * (SIZE))
    real = flash_write._write_block
    sizes: list[int] = []
    monkeypatch.setattr(flash_write, "_write_block",
                        lambda fd, buf: sizes.append(len(buf)) or real(fd, buf))
    flash_write.write(str(image), SIZE, str(out), False)
    assert sum(sizes) == SIZE and out.read_bytes() == image.read_bytes()


def test_a_read_back_that_differs_is_reported(tmp_path: Path) -> None:
    image, out = _image(tmp_path), tmp_path / "out.raw"
    w = flash_write.write(str(image), SIZE, str(out), True)
    with out.open("r+b") as f:
        f.seek(5 * MiB)
        f.write(b"\x01")  # a stick that does not keep what it was given
    with pytest.raises(flash_write.VerifyFailed, match="does not read back what was written"):
        flash_write.verify(str(out), w)
    os.truncate(out, MiB)
    with pytest.raises(flash_write.VerifyFailed, match="ended"):
        flash_write.verify(str(out), w)


@pytest.mark.parametrize("code", [errno.ENODEV, errno.EIO, errno.ENXIO, errno.ENOSPC])
def test_a_device_that_vanishes_mid_write(tmp_path: Path, monkeypatch, code: int) -> None:
    image, out = _image(tmp_path), tmp_path / "out.raw"
    calls = []

    def failing(fd: int, buf: memoryview) -> None:
        calls.append(len(buf))
        if len(calls) == 2:
            raise OSError(code, os.strerror(code))
        os.write(fd, buf)

    monkeypatch.setattr(flash_write, "_write_block", failing)
    with pytest.raises(flash_write.DeviceVanished) as e:
        flash_write.write(str(image), SIZE, str(out), True)
    assert "the device disappeared while writing" in str(e.value)
    assert "the stick is not usable, write it again" in str(e.value)
    assert e.value.exit_code == 1 and len(calls) == 2


def test_the_cli_reports_a_vanished_device_without_a_traceback(tmp_path: Path, monkeypatch,
                                                              capsys) -> None:
    def gone(fd: int, buf: memoryview) -> None:
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(flash_write, "_write_block", gone)
    code = _cli(monkeypatch, ["flash", str(_image(tmp_path)), str(tmp_path / "o.raw"), "--yes"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: the device disappeared while writing" in err and "Traceback" not in err


def test_a_busy_device_is_refused_at_open(tmp_path: Path, monkeypatch) -> None:
    def busy(path: str, flags: int, *mode: int) -> int:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(flash_write.os, "open", busy)
    with pytest.raises(FlashRefused, match="the kernel reports it in use"):
        flash_write.write(str(_image(tmp_path)), SIZE, "/dev/sdz", False)


def test_progress_line() -> None:
    assert flash_write.progress_line(512 * MiB, GiB, 10.0) == "512 MiB / 1.0 GiB   50%  51.2 MiB/s"
