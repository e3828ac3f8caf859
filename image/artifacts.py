"""Where a build's outputs are, as one typed value (used by the boot tests and benchmarks).

Stable API: `find(build_dir) -> Artifacts`. Everything here is derived from the files in the
build directory, so it works on an image built earlier or elsewhere: the usr hash is read from
the signed UKI's own command line, which is the value the booted system will enforce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anklume import uki as ukifile
from anklume.errors import PermanentError

IMAGE_ID = "anklume"
ARCH = "x86-64"
# Written by `anklume build` next to the image: facts not visible in the files (key dir).
BUILD_INFO = "build.json"


class ArtifactsNotFound(PermanentError):
    pass


@dataclass(frozen=True)
class Artifacts:
    build_dir: Path
    version: str
    raw: Path  # the full disk image (ESP + usr slot A + verity + signature)
    uki: Path  # the signed UKI, also inside the raw image's ESP
    usr_hash: str | None  # dm-verity root hash of /usr, from the UKI's `usrhash=`
    cmdline: str  # the UKI's built-in kernel command line
    usr: Path | None  # split partitions: what systemd-sysupdate installs into slot B
    usr_verity: Path | None
    usr_verity_sig: Path | None
    key_dir: Path
    db_cert: Path  # Secure Boot db certificate (PEM) the image is signed with
    verity_cert: Path  # certificate of the verity signature partition (PEM)

    @property
    def image_id(self) -> str:
        return IMAGE_ID

    @property
    def split_partitions(self) -> list[Path]:
        return [p for p in (self.usr, self.usr_verity, self.usr_verity_sig) if p is not None]


def output_name(version: str) -> str:
    """The common stem of every output file of one build."""
    return f"{IMAGE_ID}_{version}"


def _split(build_dir: Path, stem: str, kind: str) -> Path | None:
    # `<stem>.usr-x86-64.<partition UUID>.raw`; the UUID part keeps names of older builds apart,
    # but `anklume build` cleans them, so more than one match means a stale directory.
    matches = sorted(build_dir.glob(f"{stem}.{kind}.*.raw"))
    if len(matches) > 1:
        raise ArtifactsNotFound(
            f"several {kind} partitions for {stem} in {build_dir}",
            hint="rebuild with `anklume build` (it cleans stale split files)",
        )
    return matches[0] if matches else None


def _version_default() -> str:
    from anklume import __version__

    return __version__


def find(
    build_dir: Path = Path("build"), version: str | None = None, key_dir: Path | None = None
) -> Artifacts:
    """The outputs of the build of `version` (default: this source tree's VERSION)."""
    build_dir = build_dir.resolve()
    version = version or _version_default()
    stem = output_name(version)
    raw = build_dir / f"{stem}.raw"
    uki = build_dir / f"{stem}.efi"
    missing = [p.name for p in (raw, uki) if not p.is_file()]
    if missing:
        raise ArtifactsNotFound(
            f"no image {stem} in {build_dir} (missing {', '.join(missing)})",
            hint="build it with `scripts/build` (or `anklume build`)",
        )
    info: dict[str, Any] = {}
    info_path = build_dir / BUILD_INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text())
    if key_dir is None:
        if info.get("key_dir"):
            key_dir = Path(info["key_dir"])
        else:
            from anklume import paths

            key_dir = paths.key_dir()
    from anklume.signing.keys import KeySet

    ks = KeySet(key_dir)
    cmdline = ukifile.cmdline(uki)
    return Artifacts(
        build_dir=build_dir,
        version=version,
        raw=raw,
        uki=uki,
        usr_hash=ukifile.usr_hash(cmdline),
        cmdline=cmdline,
        usr=_split(build_dir, stem, f"usr-{ARCH}"),
        usr_verity=_split(build_dir, stem, f"usr-{ARCH}-verity"),
        usr_verity_sig=_split(build_dir, stem, f"usr-{ARCH}-verity-sig"),
        key_dir=ks.dir,
        db_cert=ks.db_cert,
        verity_cert=ks.verity_cert,
    )
