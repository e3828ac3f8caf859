"""IMAGE_VERSION from os-release: set on the appliance image (mkosi's ImageVersion=), absent on
a development host. One reader for the agent's last result, `anklume update` and `anklume
status`."""

from __future__ import annotations

import shlex
from pathlib import Path


def image_version_of(text: str) -> str | None:
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "IMAGE_VERSION":
            try:
                parts = shlex.split(value)
            except ValueError:  # an unbalanced quote: not a value we can trust
                return None
            return parts[0] if parts else None
    return None


def image_version(path: Path = Path("/etc/os-release")) -> str | None:
    try:
        return image_version_of(path.read_text())
    except OSError:
        return None
