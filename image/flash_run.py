"""The steps of `anklume flash`, in the order that keeps it safe: look, refuse, show, ask,
look again, write, read back. Nothing is opened for writing before the answer is yes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from anklume.errors import PermanentError
from anklume.image import flash, flash_devices, flash_write
from anklume.image.flash import FlashRefused, Target

Echo = Callable[..., None]
Ask = Callable[[str], str]


def _image_size(image: Path) -> int:
    if not image.is_file():
        raise PermanentError(f"no image at {image}",
                             hint="build it with `anklume build` (build/anklume_<version>.raw)")
    size = image.stat().st_size  # apparent size: the holes count, they are written as zeros
    if size == 0:
        raise PermanentError(f"{image} is empty")
    return size


def list_or_wait(image: Path, wait: bool, timeout: float, echo: Echo) -> str | None:
    """Without DEVICE: the candidates (None), or with --wait the stick that arrived."""
    size = _image_size(image)
    if not wait:
        for line in flash.listing(flash_devices.scan(), size):
            echo(line)
        return None
    echo(f"Waiting up to {timeout:.0f} s for a stick to be plugged in...", err=True)
    name = flash_devices.wait_for_stick(timeout)
    time.sleep(1)  # let the kernel read its partition table before lsblk looks
    return f"/dev/{name}"


def _same_disk(a: Target, b: Target) -> bool:
    return (a.kind, a.size, a.model, a.serial) == (b.kind, b.size, b.model, b.serial)


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def flash_image(image: Path, device: str, *, force: bool, yes: bool, echo: Echo, ask: Ask,
                interactive: Callable[[], bool] = _stdin_is_tty,
                probe: Callable[[str], Target] = flash_devices.target) -> None:
    size = _image_size(image)
    found = probe(device)
    if found.is_file and os.path.exists(device) and os.path.samefile(device, image):
        raise FlashRefused(f"refusing to write {device}: it is the image itself")
    plan = flash.plan(str(image), size, found, force=force)
    echo(f"{image} ({flash.human(size)}) will be written to:")
    for line in flash.describe(found):
        echo(line)
    for w in plan.warnings:
        echo(f"warning: {w}", err=True)
    if not found.is_file:
        echo("Everything on it will be erased.")
    must_ask = flash.confirmation(yes, interactive())
    if must_ask and ask(f"Type yes to write {device}").strip() != "yes":
        raise FlashRefused("not confirmed", hint="nothing was written")
    # The stick could have been swapped or mounted by an automounter while we asked.
    again = probe(device)
    if not found.is_file and not _same_disk(found, again):
        raise FlashRefused(f"{device} changed while waiting for the answer",
                           hint="nothing was written; run again")
    flash.plan(str(image), size, again, force=force)
    written = flash_write.write(str(image), size, device, found.is_file, _progress(echo))
    echo(f"Wrote {flash.human(size)} in {written.seconds:.1f} s", err=True)
    flash_write.verify(device, written)
    echo(f"Verified: SHA-256 {written.sha256} of the first {size} bytes of {device} "
         "matches the image")


def _progress(echo: Echo) -> flash_write.Progress:
    tty = sys.stderr.isatty()
    last = [0.0, -1]  # seconds of the last redraw, quarter last logged

    def show(done: int, total: int, seconds: float) -> None:
        # A terminal gets one line rewritten twice a second; a log gets a line per quarter.
        if tty:
            if seconds - last[0] >= 0.5 or done == total:
                last[0] = seconds
                echo("\r" + flash_write.progress_line(done, total, seconds), err=True,
                     nl=done == total)
        elif done * 4 // total != last[1]:
            last[1] = done * 4 // total
            echo(flash_write.progress_line(done, total, seconds), err=True)

    return show
