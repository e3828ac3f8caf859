"""`anklume publish`: turn one build's outputs into a signed update directory.

    OUT/latest                 the newest published version (one line)
    OUT/<version>/manifest.json, manifest.json.sig, the UKI and the three split partitions

Refuses a build directory holding files of more than one version, a missing role, a build
whose own files do not pass the client's checks, and an already published version.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from anklume.image import artifacts
from anklume.signing.keys import KeySet
from anklume.updates import hashing, manifest, manifest_sig, verify, versions
from anklume.updates import layout as layout_mod
from anklume.updates.anchors import Anchors
from anklume.updates.errors import PublishRefused, UpdateRefused
from anklume.updates.runner import Runner, system

_STEM = re.compile(rf"{artifacts.IMAGE_ID}_([^.]+(?:\.[0-9]+)*?)\.(?:efi|raw|usr-.*\.raw)$")


def build_version(build_dir: Path) -> str:
    """The one version whose outputs are in build_dir."""
    found: dict[str, list[str]] = {}
    for p in build_dir.iterdir():
        m = _STEM.match(p.name)
        if m:
            found.setdefault(m.group(1), []).append(p.name)
    if not found:
        raise PublishRefused(f"{build_dir}: no {artifacts.IMAGE_ID}_<version> outputs",
                             hint="build first (`anklume build`)")
    if len(found) > 1:
        detail = "; ".join(f"{v}: {', '.join(sorted(n))}" for v, n in sorted(found.items()))
        raise PublishRefused(f"{build_dir}: outputs of several versions ({detail})",
                             hint="publish from a clean build directory")
    (v,) = found
    if not versions.valid(v):
        raise PublishRefused(f"{build_dir}: version {v!r} is not numeric dot-separated")
    return v


def _entries(a: artifacts.Artifacts) -> list[manifest.FileEntry]:
    paths = {"usr": a.usr, "usr-verity": a.usr_verity, "usr-verity-sig": a.usr_verity_sig,
             "uki": a.uki}
    missing = [r for r, p in paths.items() if p is None or not p.is_file()]
    if missing:
        raise PublishRefused(f"{a.build_dir}: no {', '.join(missing)} file for {a.version}",
                             hint="the build must split partitions (SplitArtifacts=partitions)")
    out = []
    for role in manifest.ROLES:
        p = paths[role]
        assert p is not None
        pu = None if role == "uki" else manifest.partition_uuid_from_name(p.name)
        size, sha = hashing.digest(p)
        out.append(manifest.FileEntry(name=p.name, role=role, size=size, sha256=sha,
                                      partition_uuid=pu))
    return out


def publish(build_dir: Path, out: Path, *, min_version: str | None = None,
            key_dir: Path | None = None, runner: Runner = system) -> Path:
    build_dir = build_dir.resolve()
    version = build_version(build_dir)
    if min_version is not None and not versions.valid(min_version):
        raise PublishRefused(f"--min-version {min_version!r} is not numeric dot-separated")
    if min_version is not None and versions.newer(min_version, version):
        raise PublishRefused(f"--min-version {min_version} is newer than {version} itself")
    dest = out / version
    if dest.exists():
        raise PublishRefused(f"{dest} already exists: a published version is never replaced",
                             hint="build a new version instead")
    a = artifacts.find(build_dir, version, key_dir=key_dir)
    ks = KeySet(a.key_dir)
    entries = _entries(a)
    if not a.usr_hash:
        raise PublishRefused(f"{a.uki.name}: no usrhash= on its command line")
    m = manifest.Manifest(version=version, min_version=min_version, root_hash=a.usr_hash,
                          files=tuple(entries), compat=layout_mod.compat())
    data = manifest.to_json(m)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=out))
    try:
        for e, src in zip(entries, (a.usr, a.usr_verity, a.usr_verity_sig, a.uki), strict=True):
            assert src is not None
            shutil.copyfile(src, tmp / e.name)
        (tmp / manifest.MANIFEST).write_bytes(data)
        (tmp / manifest.SIGNATURE).write_bytes(manifest_sig.sign(data, ks.verity_key))
        # What we publish must pass exactly what a client checks (with the certificates it
        # will carry): a broken build is refused here, not on every machine.
        anchors = Anchors(update_cert=ks.verity_cert, db_cert=ks.db_cert)
        try:
            parsed = verify.verify_manifest(data, (tmp / manifest.SIGNATURE).read_bytes(),
                                            anchors, where=str(tmp / manifest.MANIFEST))
            verify.verify_files(parsed, tmp, anchors, runner)
        except UpdateRefused as e:
            raise PublishRefused(f"the build does not verify: {e}") from None
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)  # never half a version under its final name
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _update_latest(out, version)
    return dest


def _update_latest(out: Path, version: str) -> None:
    # Publishing a fix for an older line must not move `latest` backwards.
    latest = out / manifest.LATEST
    current = latest.read_text().strip() if latest.is_file() else None
    if current and versions.valid(current) and not versions.newer(version, current):
        return
    tmp = out / f".{manifest.LATEST}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, latest)
