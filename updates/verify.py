"""Everything checked before an update touches the disk, in the order that fails cheapest.

1. manifest (small): signature with the update cert, format, product, disk layout;
2. files in the staging copy: exactly the manifest's files, each size and SHA-256;
3. usr-verity-sig: PKCS#7 over the root hash with the update cert, partition UUIDs derived
   from that root hash;
4. UKI: Secure Boot signature with the db cert, every command line pins usrhash=<root hash>.
The version rules (policy) sit between 1 and 2, so a refused version is never downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anklume.updates import hashing, manifest, manifest_sig, uki, verity_sig
from anklume.updates.anchors import Anchors
from anklume.updates.errors import ManifestInvalid, UpdateRefused
from anklume.updates.manifest import Manifest
from anklume.updates.runner import Runner, system


@dataclass(frozen=True)
class Verified:
    manifest: Manifest
    dir: Path
    root_hash: str

    def path(self, role: str) -> Path:
        return self.dir / self.manifest.file(role).name


def verify_manifest(data: bytes, signature: bytes, anchors: Anchors, *, where: str,
                    compat: dict[str, object] | None = None) -> Manifest:
    manifest_sig.verify(data, signature, anchors.update_cert, where=where)
    m = manifest.parse(data)
    manifest.check_compat(m, compat)
    return m


def verify_files(m: Manifest, d: Path, anchors: Anchors, runner: Runner = system) -> Verified:
    allowed = {f.name for f in m.files} | {manifest.MANIFEST, manifest.SIGNATURE}
    extra = sorted(p.name for p in d.iterdir() if p.name not in allowed)
    if extra:
        # systemd-sysupdate picks the newest match of its patterns in this directory: nothing
        # but the verified set may be there.
        raise UpdateRefused(f"{d}: unexpected files next to the update: {', '.join(extra)}")
    for f in m.files:
        hashing.check(d / f.name, f.size, f.sha256)
    usr, ver = m.file("usr"), m.file("usr-verity")
    assert usr.partition_uuid and ver.partition_uuid  # manifest.parse guarantees them
    root_hash = verity_sig.verify(
        d / m.file("usr-verity-sig").name, anchors.update_cert,
        data_uuid=usr.partition_uuid, verity_uuid=ver.partition_uuid, runner=runner)
    if root_hash != m.root_hash:
        raise ManifestInvalid(
            f"{manifest.MANIFEST}: root_hash {m.root_hash}, the signed slot has {root_hash}")
    uki_path = d / m.file("uki").name
    uki.verify_signature(uki_path, anchors.db_cert, runner)
    uki.verify_usrhash(uki_path, root_hash)
    return Verified(manifest=m, dir=d, root_hash=root_hash)
