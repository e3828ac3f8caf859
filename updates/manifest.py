"""The update manifest: one version's files, sizes, hashes and compatibility, as strict JSON.

Pure: building, serialising and parsing. Parsing happens only after the signature over the
exact bytes has been checked (see manifest_sig), and it is strict: unknown fields, unknown
roles or file names that are not the ones this version must have are refused, so a signed
manifest cannot smuggle a path ("../x") or a second set of files past the client.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from anklume.image.artifacts import ARCH, output_name
from anklume.updates import layout, versions
from anklume.updates.errors import Incompatible, ManifestInvalid

FORMAT_VERSION = 1
PRODUCT = "anklume"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
LATEST = "latest"

# Install order: the three partitions first, the UKI last (it is what makes a version bootable).
ROLES = ("usr", "usr-verity", "usr-verity-sig", "uki")
_PARTITION_KIND = {
    "usr": f"usr-{ARCH}",
    "usr-verity": f"usr-{ARCH}-verity",
    "usr-verity-sig": f"usr-{ARCH}-verity-sig",
}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOP_KEYS = {"format", "product", "version", "min_version", "compat", "root_hash", "files"}
_FILE_KEYS = {"name", "role", "size", "sha256", "partition_uuid"}


@dataclass(frozen=True)
class FileEntry:
    name: str
    role: str
    size: int
    sha256: str
    partition_uuid: str | None  # canonical form with dashes; None for the UKI


@dataclass(frozen=True)
class Manifest:
    version: str
    min_version: str | None  # the oldest running version that may install this one
    root_hash: str
    files: tuple[FileEntry, ...]
    compat: dict[str, object]
    format: int = FORMAT_VERSION
    product: str = PRODUCT

    def file(self, role: str) -> FileEntry:
        return next(f for f in self.files if f.role == role)


def expected_name(version: str, role: str, partition_uuid: str | None) -> str:
    """The file name a role must have: what systemd-sysupdate's MatchPattern= expects."""
    stem = output_name(version)
    if role == "uki":
        return f"{stem}.efi"
    return f"{stem}.{_PARTITION_KIND[role]}.{uuid.UUID(partition_uuid).hex}.raw"


def partition_uuid_from_name(name: str) -> str:
    """`anklume_<v>.usr-x86-64.<32 hex>.raw` -> canonical UUID (how repart names split files)."""
    m = re.fullmatch(r".+\.([0-9a-f]{32})\.raw", name)
    if not m:
        raise ManifestInvalid(f"{name}: no partition UUID in the file name")
    return str(uuid.UUID(m.group(1)))


def to_json(m: Manifest) -> bytes:
    doc = {
        "format": m.format,
        "product": m.product,
        "version": m.version,
        "min_version": m.min_version,
        "compat": m.compat,
        "root_hash": m.root_hash,
        "files": [
            {"name": f.name, "role": f.role, "size": f.size, "sha256": f.sha256,
             "partition_uuid": f.partition_uuid}
            for f in m.files
        ],
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise ManifestInvalid(f"{MANIFEST}: {what}")


def parse(data: bytes) -> Manifest:
    """A verified manifest's bytes -> Manifest; refuses anything this client does not know."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestInvalid(f"{MANIFEST}: not JSON ({e})") from None
    _need(isinstance(doc, dict), "not a JSON object")
    # The format number is checked first: a newer format may change everything else.
    if doc.get("format") != FORMAT_VERSION:
        raise Incompatible(
            f"{MANIFEST}: format {doc.get('format')!r}, this system reads format "
            f"{FORMAT_VERSION}", hint="update through an intermediate version that knows both")
    if doc.get("product") != PRODUCT:
        raise Incompatible(f"{MANIFEST}: product {doc.get('product')!r}, expected {PRODUCT!r}")
    _need(set(doc) == _TOP_KEYS, f"fields {sorted(doc)}, expected {sorted(_TOP_KEYS)}")
    version = doc["version"]
    _need(versions.valid(version), f"version {version!r} is not numeric dot-separated")
    min_version = doc["min_version"]
    _need(min_version is None or versions.valid(min_version),
          f"min_version {min_version!r} is not numeric dot-separated")
    _need(isinstance(doc["compat"], dict), "compat is not an object")
    root_hash = doc["root_hash"]
    _need(isinstance(root_hash, str) and _HEX64.fullmatch(root_hash) is not None,
          f"root_hash {root_hash!r} is not 64 lowercase hex digits")
    files = doc["files"]
    _need(isinstance(files, list), "files is not a list")
    entries = [_parse_file(f, version) for f in files]
    roles = [e.role for e in entries]
    _need(sorted(roles) == sorted(ROLES), f"roles {roles}, expected exactly {list(ROLES)}")
    return Manifest(version=version, min_version=min_version, root_hash=root_hash,
                    files=tuple(sorted(entries, key=lambda e: ROLES.index(e.role))),
                    compat=doc["compat"])


def _parse_file(f: object, version: str) -> FileEntry:
    _need(isinstance(f, dict) and set(f) == _FILE_KEYS,
          f"file entry {f!r} must have exactly {sorted(_FILE_KEYS)}")
    assert isinstance(f, dict)
    role = f["role"]
    _need(role in ROLES, f"unknown role {role!r}")
    _need(isinstance(f["size"], int) and not isinstance(f["size"], bool) and f["size"] > 0,
          f"{f['name']!r}: size {f['size']!r} is not a positive integer")
    _need(isinstance(f["sha256"], str) and _HEX64.fullmatch(f["sha256"]) is not None,
          f"{f['name']!r}: sha256 {f['sha256']!r} is not 64 lowercase hex digits")
    pu = f["partition_uuid"]
    if role == "uki":
        _need(pu is None, f"{f['name']!r}: the UKI has no partition UUID")
    else:
        try:
            _need(isinstance(pu, str) and str(uuid.UUID(pu)) == pu,
                  f"{f['name']!r}: partition_uuid {pu!r} is not a canonical UUID")
        except ValueError:
            _need(False, f"{f['name']!r}: partition_uuid {pu!r} is not a UUID")
    want = expected_name(version, role, pu)
    _need(f["name"] == want, f"{role} file is named {f['name']!r}, expected {want!r}")
    return FileEntry(name=f["name"], role=role, size=f["size"], sha256=f["sha256"],
                     partition_uuid=pu)


def check_compat(m: Manifest, mine: dict[str, object] | None = None) -> None:
    """Refuse an update built for another layout than the one this system runs."""
    mine = mine if mine is not None else layout.compat()
    if m.compat != mine:
        diff = {k: (m.compat.get(k), mine.get(k))
                for k in sorted(set(m.compat) | set(mine)) if m.compat.get(k) != mine.get(k)}
        detail = ", ".join(f"{k}: update {a!r} vs this system {b!r}" for k, (a, b) in diff.items())
        raise Incompatible(f"{MANIFEST} of {m.version}: built for another disk layout ({detail})")
    for f in m.files:
        cap = layout.ROLE_MAX_BYTES.get(f.role)
        if cap is not None and f.size > cap:
            raise Incompatible(f"{f.name}: {f.size} bytes does not fit its {cap}-byte slot")
