"""The container image shipped inside the OS, so the default infra deploys with no network.

mkosi builds the tree (image/container-image/mkosi.conf); this module packs it in Incus's unified
image format (one tarball: metadata.yaml, templates/, rootfs/) and describes it in an
`image.json` that the agent reads at boot (agent/images.py). Incus names an image by the
SHA-256 of its tarball, so the description carries that fingerprint: the agent can tell
whether the image is already imported without reading the file.

The tarball is keyed on the tree's content (`tree_digest`: paths, types, modes, owners, extended
attributes, file contents; not timestamps) and kept in a cache: a build whose tree did not
change reuses the packed tarball byte for byte instead of packing it again (zstd -19, 35-40 s
on 2 cores), and two OS versions built from the same tree ship the same image, so an update
does not import it again under a new fingerprint. Nothing in the image names the OS version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
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


# Bumped whenever pack() writes something else from the same tree (metadata, tar options).
PACK_FORMAT = 2
KEEP_PACKS = 3


def mkosi_args(repo: Path, staging: Path, cache: Path, packages: Path) -> list[str]:
    """mkosi's command line for the container tree (pure). Same output directory as the OS,
    so the default tools tree there is built once and shared. No --image-version: it would
    go into the tree's os-release and make every OS version's image a different one."""
    return [
        "--directory", str(repo / CONFIG_DIR),
        "--output-directory", str(staging),
        "--cache-directory", str(cache),
        "--package-cache-directory", str(packages),
        "build",
    ]  # fmt: skip


def metadata(serial: str, created: int) -> str:
    """metadata.yaml (JSON is valid YAML, and needs no YAML writer). `serial`: the tree's
    content digest (short), which names this build of the image."""
    return json.dumps({
        "architecture": "x86_64",
        "creation_date": created,
        "properties": {
            "description": "Debian trixie (shipped with anklume)",
            "os": "Debian",
            "release": "trixie",
            "architecture": "amd64",
            "variant": "anklume",
            "serial": serial,
        },
        # Each instance gets its own name in /etc/hostname and /etc/hosts at creation.
        "templates": {
            "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
            "/etc/hosts": {"when": ["create", "copy"], "template": "hosts.tpl"},
        },
    }, indent=2) + "\n"


def tree_digest(root: Path) -> str:
    """SHA-256 over what the image is made of: every entry's path, type, mode, owner,
    extended attributes and content (or link target), in path order; not timestamps, which
    differ at every build of the same packages."""
    h = hashlib.sha256(f"anklume-container {PACK_FORMAT}\n".encode())
    for name, text in sorted(_TEMPLATES.items()):
        h.update(f"template {name} {text!r}\n".encode())

    def entry(path: Path, rel: str) -> None:
        st = path.lstat()
        xattrs = sorted((a, os.getxattr(path, a, follow_symlinks=False))
                        for a in os.listxattr(path, follow_symlinks=False))
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode):o}\0{stat.S_IMODE(st.st_mode):o}\0"
                 f"{st.st_uid}:{st.st_gid}\0{st.st_rdev}\0{xattrs!r}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode(errors="surrogateescape"))
        elif stat.S_ISREG(st.st_mode):
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\n")

    entry(root, ".")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = base / name
            entry(p, str(p.relative_to(root)))
    return h.hexdigest()


def pack(rootfs: Path, dest: Path, cache: Path) -> tuple[Path, bool]:
    """Write `dest/<NAME>/{image.tar.zst,image.json}` from the mkosi tree; returns the json,
    and True when the packed pair came from `cache/<tree digest>/` (this tree was packed
    before)."""
    if not (rootfs / "usr").is_dir():
        raise FileNotFoundError(f"{rootfs} is not a root file system tree")
    digest = tree_digest(rootfs)
    kept = cache / digest
    reused = (kept / DESCRIPTION_FILE).is_file()
    if reused:
        os.utime(kept)  # most recently used: kept by the pruning below
    else:
        _pack(rootfs, kept, digest)
        _prune(cache, keep=KEEP_PACKS)
    out = dest / NAME
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in (TARBALL, DESCRIPTION_FILE):
        shutil.copyfile(kept / name, out / name)
    return out / DESCRIPTION_FILE, reused


def _prune(cache: Path, keep: int) -> None:
    """Only the `keep` most recently used packs stay (24 MB each)."""
    packs = sorted((d for d in cache.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime,
                   reverse=True)
    for d in packs[keep:]:
        shutil.rmtree(d, ignore_errors=True)


def _pack(rootfs: Path, kept: Path, digest: str) -> None:
    partial = kept.with_name(kept.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    tarball = partial / TARBALL
    with tempfile.TemporaryDirectory(prefix="anklume-container-") as tmp:
        meta = Path(tmp)
        (meta / "metadata.yaml").write_text(metadata(digest[:12], int(time.time())))
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
    (partial / DESCRIPTION_FILE).write_text(json.dumps(describe(tarball, digest), indent=2)
                                            + "\n")
    if kept.exists():
        shutil.rmtree(kept)
    partial.rename(kept)  # complete or absent: an interrupted pack is never reused


def describe(tarball: Path, digest: str) -> dict[str, object]:
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
        "tree": digest,
    }
