"""Key sets for the appliance: the Secure Boot db key and the verity/update signing key.

Private keys never live in the repository: the default key directory is outside it, files are
written 0600 and never overwritten unless asked (losing a real key means machines in the field
no longer accept updates, so overwriting must be deliberate).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from anklume import paths
from anklume.errors import PermanentError

# Firmware implementations only reliably verify RSA-2048 signatures in the db; the kernel's
# dm-verity signature check (PKCS#7) accepts the same, so both keys use it.
_RSA_BITS = 2048
_VALID_DAYS = 3650

# The key pairs a build needs, by role: (file stem, certificate common name).
ROLES: dict[str, tuple[str, str]] = {
    "db": ("db", "anklume Secure Boot db"),
    "verity": ("verity", "anklume verity and update signing"),
}


class KeysExistError(PermanentError):
    pass


@dataclass(frozen=True)
class KeySet:
    dir: Path

    def key(self, role: str) -> Path:
        return self.dir / f"{ROLES[role][0]}.key"

    def cert(self, role: str) -> Path:
        return self.dir / f"{ROLES[role][0]}.crt"

    @property
    def db_key(self) -> Path:
        return self.key("db")

    @property
    def db_cert(self) -> Path:
        return self.cert("db")

    @property
    def verity_key(self) -> Path:
        return self.key("verity")

    @property
    def verity_cert(self) -> Path:
        return self.cert("verity")

    def paths(self) -> list[Path]:
        return [p for r in ROLES for p in (self.key(r), self.cert(r))]

    def complete(self) -> bool:
        return all(p.is_file() for p in self.paths())


def _self_signed(key: rsa.RSAPrivateKey, common_name: str, code_signing: bool) -> x509.Certificate:
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "anklume"),
    ])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated a little: a machine with a slightly slow RTC must not see "not yet valid".
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    if code_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode from the start, so a private key is never briefly readable.
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def generate(key_dir: Path | None = None, *, force: bool = False) -> KeySet:
    """Create both key pairs in key_dir; refuse to touch existing files unless force."""
    ks = KeySet((key_dir or paths.key_dir()).resolve())
    existing = [p for p in ks.paths() if p.exists()]
    if existing and not force:
        raise KeysExistError(
            f"keys already exist in {ks.dir}: {', '.join(p.name for p in existing)}",
            hint="keep them (images signed with them trust only them) or pass --force",
        )
    ks.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ks.dir, 0o700)
    for role, (_, cn) in ROLES.items():
        key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
        cert = _self_signed(key, cn, code_signing=True)
        _write(
            ks.key(role),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
            0o600,
        )
        _write(ks.cert(role), cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return ks


def ensure(key_dir: Path | None = None) -> tuple[KeySet, bool]:
    """The key set in key_dir, generated when none exists; returns (keys, created)."""
    ks = KeySet((key_dir or paths.key_dir()).resolve())
    if ks.complete():
        return ks, False
    if any(p.exists() for p in ks.paths()):
        raise PermanentError(
            f"incomplete key set in {ks.dir}",
            hint="restore the missing files, or `anklume keys generate --force` for new keys",
        )
    return generate(ks.dir), True
