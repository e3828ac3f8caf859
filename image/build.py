"""`anklume build`: the signed A/B appliance image, built by mkosi from the repository's config.

mkosi does the work; this module only prepares what mkosi cannot know: the version (one source,
anklume/VERSION), the signing keys (outside the repository), the wheels to install, and cache
hygiene that mkosi's own invalidation misses (see the comments in `prepare_caches`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from anklume import log
from anklume.errors import PermanentError
from anklume.image import artifacts, container
from anklume.paths import cache_dir, tools_dir
from anklume.run import run, stream
from anklume.signing import keys

_log = log.get("image")

# pylxd is not packaged in trixie: the image gets the same pure-Python release the agent's
# tests run against on the host (its other dependencies are Debian packages).
PYLXD_FALLBACK = "2.4.2"
# Cache key of mkosi's incremental image: `<distribution>~<release>~<arch>`.
_IMAGE_CACHE_GLOB = "debian~trixie~x86-64.*"
# The initrd subimage (mkosi.images/initrd) and mkosi's default one, which older builds made.
_INITRD_CACHE_GLOB = "*initrd*"
# Its output in the staging directory (mkosi-initrd's Output=initrd, cpio, zstd).
INITRD_OUTPUT = "initrd"

_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+~-]*$")


class BuildError(PermanentError):
    pass


@dataclass(frozen=True)
class Paths:
    repo: Path
    build_dir: Path
    cache: Path

    @property
    def mkosi_cache(self) -> Path:
        return self.cache / "mkosi"

    @property
    def staging(self) -> Path:
        # mkosi's output directory, outside the repository: it also receives the 1.6 GB default
        # tools tree (`tools/`), which is reused across builds.
        return self.cache / "out"

    @property
    def packages(self) -> Path:
        return self.cache / "packages"

    @property
    def inputs(self) -> Path:
        return self.cache / "inputs"

    @property
    def wheels(self) -> Path:
        return self.cache / "wheels"

    @property
    def debs(self) -> Path:
        return self.cache / "debs"


def read_version(repo: Path, override: str | None = None) -> str:
    """The image version: anklume/VERSION of the tree being built (not of the running code),
    or `override` (a later version of the same tree, e.g. for update tests)."""
    version = override or (repo / "anklume" / "VERSION").read_text().strip()
    where = "--version" if override else "anklume/VERSION"
    if not _VERSION_RE.match(version):
        raise BuildError(f"invalid version {version!r} in {where}")
    # Partition labels are `anklume_<version>_verity_sig` and GPT labels hold 36 characters.
    if len(f"{artifacts.IMAGE_ID}_{version}_verity_sig") > 36:
        raise BuildError(f"version {version!r} is too long for GPT partition labels (36 chars)")
    return version


def find_repo(start: Path | None = None) -> Path:
    """The repository holding mkosi.conf: the working directory or the package's own tree."""
    candidates = [start or Path.cwd(), Path(__file__).resolve().parent.parent]
    for c in candidates:
        for d in (c, *c.parents):
            if (d / "mkosi.conf").is_file() and (d / "anklume" / "VERSION").is_file():
                return d
    raise BuildError("no mkosi.conf found", hint="run from the anklume repository")


def mkosi_command() -> list[str]:
    tools = tools_dir()
    wrapper = tools / "bin" / "mkosi"
    if not wrapper.is_file():
        raise BuildError(
            f"mkosi is not installed in {tools}", hint="run scripts/setup-image-tools as root"
        )
    return [str(wrapper)]


def mkosi_args(paths: Paths, version: str, ks: keys.KeySet) -> list[str]:
    """The mkosi command line for one build (pure: easy to test and to show with --dry-run)."""
    return [
        "--directory", str(paths.repo),
        "--image-version", version,
        "--output-directory", str(paths.staging),
        "--cache-directory", str(paths.mkosi_cache),
        "--package-cache-directory", str(paths.packages),
        "--secure-boot-key", str(ks.db_key),
        "--secure-boot-certificate", str(ks.db_cert),
        "--verity-key", str(ks.verity_key),
        "--verity-certificate", str(ks.verity_cert),
        # Scripts see only these two, never the repository or the rest of the host.
        "--build-sources", f"{paths.inputs}:inputs,{ks.dir}:keys",
        "--volatile-package-directory", str(paths.debs),
        "build",
    ]  # fmt: skip


def _fingerprint(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def config_files(repo: Path) -> list[Path]:
    files = [repo / "mkosi.conf", *sorted((repo / "mkosi.conf.d").glob("*.conf")),
             *sorted((repo / "mkosi.images").rglob("*.conf"))]
    return [f for f in files if f.is_file()]


def prepare_caches(paths: Paths, ks: keys.KeySet) -> list[str]:
    """Drop the caches mkosi would wrongly reuse; returns what was dropped and why."""
    dropped: list[str] = []
    paths.mkosi_cache.mkdir(parents=True, exist_ok=True)
    stamps = paths.mkosi_cache / "anklume-stamps.json"
    old = json.loads(stamps.read_text()) if stamps.is_file() else {}
    new = {
        # The cached package layer holds the ZFS module signed with the db key: a new key
        # needs a new module, and mkosi's cache key does not include keys.
        "db_cert": _fingerprint(ks.db_cert),
        # After a package list change mkosi may reuse a stale default-initrd cache and fail in
        # kmod's removal script (seen with 25.3): rebuild the initrd when the config changes.
        "config": _fingerprint(*config_files(paths.repo)),
    }
    drops = {
        "db_cert": (_IMAGE_CACHE_GLOB, "the Secure Boot key changed"),
        "config": (_INITRD_CACHE_GLOB, "the mkosi configuration changed"),
    }
    for key, (glob, why) in drops.items():
        # No record means the caches predate this code (or do not exist): nothing to compare.
        if key not in old or old[key] == new[key]:
            continue
        victims = list(paths.mkosi_cache.glob(glob))
        for v in victims:
            if v.is_dir() and not v.is_symlink():
                shutil.rmtree(v)
            else:
                v.unlink()
        if victims:
            dropped.append(f"{glob}: {why}")
    # Recorded before mkosi runs: whatever cache this build saves is made with these inputs.
    stamps.write_text(json.dumps(new))
    return dropped


def _pylxd_version() -> str:
    try:
        from importlib.metadata import version

        return version("pylxd")
    except Exception:
        return PYLXD_FALLBACK


def build_wheels(paths: Paths, version: str) -> list[Path]:
    """anklume's own wheel (from a copy of the sources, carrying the image's version) and the
    vendored pylxd wheel."""
    if paths.inputs.exists():
        shutil.rmtree(paths.inputs)
    paths.inputs.mkdir(parents=True)
    # setuptools writes into `build/` of the source tree, which is our output directory:
    # build from a clean copy of just what the package needs.
    meta = tomllib.loads((paths.repo / "pyproject.toml").read_text())
    dirs = set(meta["tool"]["setuptools"].get("package-dir", {}).values()) or {"anklume"}
    with tempfile.TemporaryDirectory(prefix="anklume-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(paths.repo / name, src / name)
        for d in sorted(dirs):
            shutil.copytree(
                paths.repo / d, src / d,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
            )
        # `anklume --version` on the appliance says what os-release says.
        (src / "anklume" / "VERSION").write_text(version + "\n")
        _pip(["wheel", "--no-deps", "-w", str(paths.inputs), str(src)])
    pylxd = f"pylxd=={_pylxd_version()}"
    paths.wheels.mkdir(parents=True, exist_ok=True)
    if not list(paths.wheels.glob(f"pylxd-{_pylxd_version()}-*.whl")):
        _pip(["download", "--no-deps", "--only-binary", ":all:", "-d", str(paths.wheels), pylxd])
    for whl in paths.wheels.glob(f"pylxd-{_pylxd_version()}-*.whl"):
        shutil.copy2(whl, paths.inputs / whl.name)
    return sorted(paths.inputs.glob("*.whl"))


INITRD_PACKAGE = "anklume-initrd"


def build_initrd_package(paths: Paths, version: str) -> Path:
    """Pack image/initrd/ as a .deb, installed into both the initrd and the OS (whose units
    carry over switch-root), as a volatile package: it never invalidates the cached layers."""
    if paths.debs.exists():
        shutil.rmtree(paths.debs)
    paths.debs.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="anklume-initrd-") as tmp:
        root = Path(tmp) / "pkg"
        shutil.copytree(paths.repo / "image" / "initrd", root, symlinks=True)
        (root / "DEBIAN").mkdir()
        # mkosi's local repository tool needs Section and Priority.
        (root / "DEBIAN" / "control").write_text(
            f"Package: {INITRD_PACKAGE}\n"
            f"Version: {version}\n"
            "Architecture: all\n"
            "Maintainer: anklume <anklume@localhost>\n"
            "Section: admin\n"
            "Priority: optional\n"
            "Description: anklume initrd units\n"
            " Fill the empty root's /etc and /var from /usr/share/factory, mount the boot disk's\n"
            " persistent partition with this machine's identity, and copy /usr into RAM\n"
            " (anklume.toram=1) before switch-root.\n"
        )
        deb = paths.debs / f"{INITRD_PACKAGE}_{version}_all.deb"
        run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)])
    return deb


def _pip(args: list[str]) -> None:
    run([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args])


def clean_outputs(directory: Path, stem_prefix: str = artifacts.IMAGE_ID) -> list[Path]:
    """Remove earlier outputs (`anklume_*`, the `anklume` link, build.json) from a directory.

    Split partition files carry their partition UUID in the name, so outputs of older builds
    would pile up next to the new ones and make "the" usr partition ambiguous.
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if p.name.startswith((f"{stem_prefix}_", f"{stem_prefix}.")) or p.name in (
                stem_prefix, artifacts.BUILD_INFO):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def _move(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError:
        # Another file system: copy keeping holes (the raw image is mostly empty space).
        run(["cp", "--sparse=always", "--reflink=auto", str(src), str(dst)], capture=False)
        src.unlink()


def build(
    repo: Path | None = None,
    build_dir: Path | None = None,
    key_dir: Path | None = None,
    echo: Callable[[str], object] = print,
    version: str | None = None,
) -> artifacts.Artifacts:
    if os.geteuid() != 0:
        raise BuildError("building the image needs root (mkosi mounts and chroots)")
    repo = find_repo(repo)
    paths = Paths(repo=repo, build_dir=(build_dir or repo / "build").resolve(), cache=cache_dir())
    version = read_version(repo, version)
    mkosi = mkosi_command()

    ks, created = keys.ensure(key_dir)
    if created:
        echo(f"no signing keys found: generated a development key set in {ks.dir}")
        echo("  (keep it: machines enrolled with it only trust images signed by it)")

    t0 = time.monotonic()
    wheels = build_wheels(paths, version)
    build_initrd_package(paths, version)
    _log.debug("wheels: %s", [w.name for w in wheels])
    for why in prepare_caches(paths, ks):
        echo(f"dropped cache {why}")
    clean_outputs(paths.staging)
    clean_outputs(paths.staging, container.OUTPUT)
    clean_outputs(paths.staging, INITRD_OUTPUT)
    paths.build_dir.mkdir(parents=True, exist_ok=True)
    # The container image first: the OS ships it (image/postinst copies inputs/images/).
    ct_log = paths.build_dir / "mkosi-container.log"
    echo(f"building the shipped container image (log: {ct_log})")
    # Its own incremental cache: mkosi keys caches by distribution~release~arch only, so a
    # shared one would make each image evict the other's (and the OS rebuild ZFS every time).
    ct_argv = [*mkosi, *container.mkosi_args(paths.repo, paths.staging,
                                             paths.cache / "mkosi-container", paths.packages)]
    _log.debug("+ %s", " ".join(ct_argv))
    rc = stream(ct_argv, ct_log)
    if rc != 0:
        raise BuildError(f"mkosi failed with status {rc} (container image)", hint=f"see {ct_log}")
    _, reused = container.pack(paths.staging / container.OUTPUT, paths.inputs / "images",
                               paths.cache / "container-packs")
    echo("container image: " + ("same tree as an earlier build, its packed image reused"
                                if reused else "packed"))
    logfile = paths.build_dir / "mkosi.log"
    argv = [*mkosi, *mkosi_args(paths, version, ks)]
    echo(f"building {artifacts.output_name(version)} (log: {logfile})")
    _log.debug("+ %s", " ".join(argv))
    rc = stream(argv, logfile)
    if rc != 0:
        raise BuildError(f"mkosi failed with status {rc}", hint=f"see {logfile}")

    clean_outputs(paths.build_dir)
    stem = artifacts.output_name(version)
    for p in sorted(paths.staging.iterdir()):
        if p.name.startswith(f"{stem}.") and p.is_file() and not p.is_symlink():
            _move(p, paths.build_dir / p.name)
    (paths.build_dir / artifacts.BUILD_INFO).write_text(json.dumps({
        "version": version,
        "key_dir": str(ks.dir),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - t0, 1),
    }, indent=2) + "\n")
    return artifacts.find(paths.build_dir, version=version, key_dir=ks.dir)


def describe(a: artifacts.Artifacts) -> list[str]:
    def size(p: Path) -> str:
        n = p.stat().st_size
        return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"

    lines = [f"image {a.image_id} {a.version} in {a.build_dir}:"]
    lines.append(f"  disk image     {a.raw.name} ({size(a.raw)}, write it to a disk or boot it)")
    lines.append(f"  signed UKI     {a.uki.name} ({size(a.uki)})")
    for label, p in (("usr", a.usr), ("usr verity", a.usr_verity),
                     ("verity sig", a.usr_verity_sig)):
        if p is not None:
            lines.append(f"  {label:<14} {p.name} ({size(p)})")
    lines.append(f"  usr hash       {a.usr_hash}")
    lines.append(f"  signed with    {a.db_cert} (Secure Boot), {a.verity_cert} (verity)")
    return lines


