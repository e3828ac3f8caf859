"""The container image shipped inside the OS, so the default infra deploys with no network.

mkosi builds the tree (image/container-image/mkosi.conf); this module packs it in Incus's unified
image format (one tarball: metadata.yaml, templates/, rootfs/) and describes it in an
`image.json` that the agent reads at boot (agent/images.py). Incus names an image by the
SHA-256 of its tarball, so the description carries that fingerprint: the agent can tell
whether the image is already imported without reading the file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from anklume.run import run

CONFIG_DIR = "image/container-image"
# The mkosi Output= of image/container/mkosi.conf.
OUTPUT = "anklume-container-debian-13"
NAME = "debian-13"
# The image names in infra.yml this image stands in for, and the local alias it gets.
SERVES = ("images:debian/13", "images:debian/trixie", "debian/13")
ALIAS = "anklume/debian-13"
DESCRIPTION_FILE = "image.json"
# zstd: Incus's dir driver (live mode: Incus's state in RAM) unpacks the tarball once per new
# instance, so its decompression is paid for every container of a deploy; zstd decodes ~7x
# faster than xz (host, this tarball: 0.3 s vs 2.3 s) for 24.2 MB instead of xz -6's 22.6 MB
# (the slot's squashfs cannot shrink either). Incus runs `tar --zstd`: the OS ships zstd.
TARBALL = "image.tar.zst"

_TEMPLATES = {
    "hostname.tpl": "{{ instance.name }}\n",
    "hosts.tpl": "127.0.0.1 localhost\n127.0.1.1 {{ instance.name }}\n"
    "::1 localhost ip6-localhost ip6-loopback\n",
}


def mkosi_args(repo: Path, version: str, staging: Path, cache: Path, packages: Path) -> list[str]:
    """mkosi's command line for the container tree (pure). Same output directory as the OS,
    so the default tools tree there is built once and shared."""
    return [
        "--directory", str(repo / CONFIG_DIR),
        "--image-version", version,
        "--output-directory", str(staging),
        "--cache-directory", str(cache),
        "--package-cache-directory", str(packages),
        "build",
    ]  # fmt: skip


def metadata(version: str, created: int) -> str:
    """metadata.yaml (JSON is valid YAML, and needs no YAML writer)."""
    return json.dumps({
        "architecture": "x86_64",
        "creation_date": created,
        "properties": {
            "description": f"Debian trixie (shipped with anklume {version})",
            "os": "Debian",
            "release": "trixie",
            "architecture": "amd64",
            "variant": "anklume",
            "serial": version,
        },
        # Each instance gets its own name in /etc/hostname and /etc/hosts at creation.
        "templates": {
            "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
            "/etc/hosts": {"when": ["create", "copy"], "template": "hosts.tpl"},
        },
    }, indent=2) + "\n"


def pack(rootfs: Path, dest: Path, version: str) -> Path:
    """Write `dest/<NAME>/{image.tar.zst,image.json}` from the mkosi tree; returns the json."""
    if not (rootfs / "usr").is_dir():
        raise FileNotFoundError(f"{rootfs} is not a root file system tree")
    out = dest / NAME
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tarball = out / TARBALL
    with tempfile.TemporaryDirectory(prefix="anklume-container-") as tmp:
        meta = Path(tmp)
        (meta / "metadata.yaml").write_text(metadata(version, int(time.time())))
        (meta / "templates").mkdir()
        for name, text in _TEMPLATES.items():
            (meta / "templates" / name).write_text(text)
        # GNU tar: numeric owners and extended attributes (file capabilities) as they are in
        # the tree; the tree's top directory becomes rootfs/ as Incus expects.
        run([
            "tar", "--create", "--file", str(tarball), "--numeric-owner", "--xattrs",
            "--xattrs-include=*", "--use-compress-program=zstd -19 -T0 -q",
            "-C", str(meta), "metadata.yaml", "templates",
            "-C", str(rootfs.parent), f"--transform=s,^{rootfs.name},rootfs,S",
            rootfs.name,
        ])
    desc = out / DESCRIPTION_FILE
    desc.write_text(json.dumps(describe(tarball, version), indent=2) + "\n")
    return desc


def describe(tarball: Path, version: str) -> dict:
    h = hashlib.sha256()
    with tarball.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {
        "schema": 1,
        "name": NAME,
        "file": tarball.name,
        "size": tarball.stat().st_size,
        "fingerprint": h.hexdigest(),
        "alias": ALIAS,
        "serves": list(SERVES),
        "version": version,
    }
