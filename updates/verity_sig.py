"""Check a usr-verity-sig partition: the root hash of the slot, signed with the update key.

systemd-repart writes it as a JSON object padded with NUL bytes to the partition size:
{"rootHash": "<hex>", "certificateFingerprint": "<sha256 of the cert, DER>",
 "signature": "<base64 PKCS#7, detached, over the root hash as ASCII hex, no attributes>"}.
The same document is what the kernel checks with `root-hash-signature=`, so the signed
content is exactly the hex string.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from anklume.updates.errors import PartitionUuidMismatch, VeritySignatureInvalid
from anklume.updates.runner import Runner, system

_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class VeritySig:
    root_hash: str
    signature: bytes  # DER PKCS#7
    fingerprint: str | None


def parse(path: Path) -> VeritySig:
    data = path.read_bytes()[:_MAX_BYTES].rstrip(b"\0")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise VeritySignatureInvalid(f"{path.name}: not a JSON document ({e})") from None
    rh = doc.get("rootHash") if isinstance(doc, dict) else None
    if not isinstance(rh, str) or not re.fullmatch(r"[0-9a-f]{64}", rh):
        raise VeritySignatureInvalid(f"{path.name}: rootHash {rh!r} is not a SHA-256 hex root hash")
    try:
        sig = base64.b64decode(doc.get("signature", ""), validate=True)
    except (binascii.Error, TypeError):
        sig = b""
    if not sig:
        raise VeritySignatureInvalid(f"{path.name}: no base64 PKCS#7 signature")
    fp = doc.get("certificateFingerprint")
    return VeritySig(root_hash=rh, signature=sig, fingerprint=fp if isinstance(fp, str) else None)


def partition_uuids(root_hash: str) -> tuple[str, str]:
    """(data, verity) partition UUIDs that repart derives from a root hash: its first and last
    128 bits. This is how usrhash= finds its partitions, so a slot written under other UUIDs
    would not boot."""
    raw = bytes.fromhex(root_hash)
    return str(uuid.UUID(bytes=raw[:16])), str(uuid.UUID(bytes=raw[-16:]))


def _fingerprint(cert_pem: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def verify(
    path: Path, cert_pem: Path, *, data_uuid: str, verity_uuid: str, runner: Runner = system
) -> str:
    """The verified root hash of the slot, or a typed refusal saying which check failed."""
    vs = parse(path)
    if vs.fingerprint is not None and vs.fingerprint != _fingerprint(cert_pem):
        raise VeritySignatureInvalid(
            f"{path.name}: signed by certificate {vs.fingerprint}, "
            f"this system trusts {_fingerprint(cert_pem)} ({cert_pem})")
    # python3-cryptography 43 (Debian trixie) can build PKCS#7 but not verify it: openssl does.
    # -nointern: only our certificate may be the signer, never one carried inside the signature;
    # -no_check_time: the anchor is pinned, and an appliance with a wrong clock must still update;
    # -purpose any: the certificate is for code signing, not S/MIME e-mail.
    with tempfile.TemporaryDirectory(prefix="anklume-verity-") as tmp:
        t = Path(tmp)
        (t / "sig.der").write_bytes(vs.signature)
        (t / "content").write_text(vs.root_hash)
        proc = runner([
            "openssl", "smime", "-verify", "-binary", "-inform", "DER",
            "-in", str(t / "sig.der"), "-content", str(t / "content"),
            "-CAfile", str(cert_pem), "-certfile", str(cert_pem), "-nointern",
            "-purpose", "any", "-no_check_time", "-out", str(t / "signed"),
        ])
        signed = (t / "signed").read_bytes() if (t / "signed").is_file() else b""
    if proc.returncode != 0:
        raise VeritySignatureInvalid(
            f"{path.name}: PKCS#7 signature of root hash {vs.root_hash} does not verify "
            f"against {cert_pem}: {_tail(proc.stderr)}")
    # An attached signature would verify its own embedded content: require that what was signed
    # is exactly this root hash.
    if signed != vs.root_hash.encode():
        raise VeritySignatureInvalid(
            f"{path.name}: the signature covers {signed[:80]!r}, not the root hash {vs.root_hash}")
    want_data, want_verity = partition_uuids(vs.root_hash)
    checks = (("usr", data_uuid, want_data), ("usr-verity", verity_uuid, want_verity))
    for what, got, want in checks:
        if got != want:
            raise PartitionUuidMismatch(
                f"{what} partition UUID {got} does not derive from root hash {vs.root_hash} "
                f"(expected {want})")
    return vs.root_hash


def _tail(stderr: object) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else str(stderr or "")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"
