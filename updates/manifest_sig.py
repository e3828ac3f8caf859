"""The detached signature of manifest.json: RSA PKCS#1 v1.5 with SHA-256 over its exact bytes.

PKCS#1 v1.5 rather than PSS: deterministic (publishing the same manifest twice gives the same
signature) and checkable with plain `openssl dgst -sha256 -verify` by anyone auditing a mirror.
The key is the update key (signing/ `verity.key`); the client trusts only the certificate
embedded in its own verified /usr, never one shipped with the update.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from anklume.updates.errors import ManifestSignatureInvalid


def sign(data: bytes, key_pem: Path) -> bytes:
    key = serialization.load_pem_private_key(key_pem.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ManifestSignatureInvalid(f"{key_pem}: not an RSA private key")
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def verify(data: bytes, signature: bytes, cert_pem: Path, *, where: str) -> None:
    """Raise ManifestSignatureInvalid unless `signature` is the cert's key's over `data`."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    pub = cert.public_key()
    if not isinstance(pub, rsa.RSAPublicKey):
        raise ManifestSignatureInvalid(f"{cert_pem}: not an RSA certificate")
    try:
        pub.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise ManifestSignatureInvalid(
            f"{where}: signature does not verify against {cert_pem}",
            hint="the update was signed with another key, or the manifest was modified",
        ) from None
