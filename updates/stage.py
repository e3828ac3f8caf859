"""Fetch an update into a private staging directory and verify it there, before any write.

Order: the small signed manifest first (signature, compatibility, version rules), so a refused
or foreign update costs a few KiB; then the files, each checked as it lands; then the
cross-checks of verify.verify_files. Only a directory that passed everything is handed on.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from anklume.updates import manifest, policy, verify
from anklume.updates.anchors import Anchors
from anklume.updates.errors import ManifestSignatureInvalid
from anklume.updates.runner import Runner, system
from anklume.updates.sink import Progress
from anklume.updates.sources import MANIFEST_MAX, SIG_MAX, Source, version_prefix


def read_manifest(src: Source, anchors: Anchors, *, compat: dict[str, object] | None = None
                  ) -> tuple[manifest.Manifest, bytes, bytes, str]:
    prefix = version_prefix(src)
    where = f"{src.describe().rstrip('/')}/{prefix}{manifest.MANIFEST}"
    data = src.read_small(prefix + manifest.MANIFEST, MANIFEST_MAX)
    sig = src.read_small(prefix + manifest.SIGNATURE, SIG_MAX)
    if data is None:
        raise ManifestSignatureInvalid(f"{where}: missing")
    if sig is None:
        raise ManifestSignatureInvalid(f"{where}: no {manifest.SIGNATURE} next to it")
    m = verify.verify_manifest(data, sig, anchors, where=where, compat=compat)
    return m, data, sig, prefix


def check(src: Source, anchors: Anchors, *, running: str, allow_downgrade: bool = False,
          failed: frozenset[str] = frozenset(), set_aside: frozenset[str] = frozenset(),
          compat: dict[str, object] | None = None) -> manifest.Manifest:
    """The verified manifest of what the source offers, if this system may install it."""
    m, *_ = read_manifest(src, anchors, compat=compat)
    policy.check(m.version, m.min_version, running, allow_downgrade=allow_downgrade,
                 failed=failed, set_aside=set_aside)
    return m


def prepare(src: Source, staging: Path, anchors: Anchors, *, running: str,
            allow_downgrade: bool = False, failed: frozenset[str] = frozenset(),
            set_aside: frozenset[str] = frozenset(), compat: dict[str, object] | None = None,
            runner: Runner = system, progress: Progress | None = None) -> verify.Verified:
    m, data, sig, prefix = read_manifest(src, anchors, compat=compat)
    policy.check(m.version, m.min_version, running, allow_downgrade=allow_downgrade,
                 failed=failed, set_aside=set_aside)
    _fresh(staging, keep={f.name for f in m.files})
    (staging / manifest.MANIFEST).write_bytes(data)
    (staging / manifest.SIGNATURE).write_bytes(sig)
    for f in m.files:
        src.fetch(prefix + f.name, staging / f.name, f.size, f.sha256, progress)
    return verify.verify_files(m, staging, anchors, runner)


def _fresh(staging: Path, keep: set[str]) -> None:
    """An empty private staging directory, keeping only partial files of this same version
    (so an interrupted HTTP download resumes); everything else from earlier runs goes."""
    staging.mkdir(parents=True, exist_ok=True)
    os.chmod(staging, 0o700)
    for p in staging.iterdir():
        if p.name in keep and p.is_file():
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
