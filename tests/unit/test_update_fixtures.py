"""Builders shared by the update tests: key sets, a tiny signed UKI, repart-like split files.

No tests here; the module is named test_update_* so that it lives with its users.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from anklume.signing import keys

SIG_PART_BYTES = 16 * 1024


def make_pe(sections: list[tuple[str, bytes]]) -> bytes:
    """A minimal PE32+ EFI application with the given sections (enough for sbsign/sbverify
    and for our section reader; it is never executed)."""
    file_align, sect_align = 0x200, 0x1000
    n = len(sections)
    headers_len = 0x40 + 4 + 20 + 240 + 40 * n
    size_of_headers = -(-headers_len // file_align) * file_align

    def up(x, a):
        return -(-x // a) * a

    raw_ptr, vaddr = size_of_headers, sect_align
    table, body = b"", b""
    for name, data in sections:
        raw_size = up(len(data), file_align)
        table += struct.pack("<8sIIIIIIHHI", name.encode(), len(data), vaddr, raw_size, raw_ptr,
                             0, 0, 0, 0, 0x40000040)  # initialised data, readable
        body += data.ljust(raw_size, b"\0")
        raw_ptr += raw_size
        vaddr += up(len(data), sect_align)
    dos = b"MZ".ljust(0x3C, b"\0") + struct.pack("<I", 0x40)
    coff = struct.pack("<HHIIIHH", 0x8664, n, 0, 0, 0, 240, 0x0022)
    opt = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        0x20B, 0, 0, 0, len(body), 0, 0, 0, 0, sect_align, file_align,
        0, 0, 0, 0, 0, 0, 0, vaddr, size_of_headers, 0, 10, 0, 0, 0, 0, 0, 0, 16,
    ) + b"\0" * 128
    head = (dos + b"PE\0\0" + coff + opt + table).ljust(size_of_headers, b"\0")
    return head + body


def sbsign(unsigned: Path, out: Path, key: Path, cert: Path) -> None:
    subprocess.run(["sbsign", "--key", str(key), "--cert", str(cert), "--output", str(out),
                    str(unsigned)], check=True, capture_output=True)


def make_uki(path: Path, cmdline: str, ks: keys.KeySet | None, *,
             profiles: list[str | None] | None = None) -> Path:
    secs = [(".osrel", b"ID=anklume\n"), (".cmdline", cmdline.encode() + b"\0"),
            (".linux", b"\x7fKERNEL" * 64)]
    for p in profiles or []:
        secs.append((".profile", b"ID=p\n"))
        if p is not None:
            secs.append((".cmdline", p.encode()))
    unsigned = path.with_suffix(".unsigned")
    unsigned.write_bytes(make_pe(secs))
    if ks is None:
        shutil.copyfile(unsigned, path)
    else:
        sbsign(unsigned, path, ks.db_key, ks.db_cert)
    unsigned.unlink()
    return path


def verity_sig_doc(root_hash: str, ks: keys.KeySet, *, content: str | None = None,
                   nodetach: bool = False, tmp: Path) -> bytes:
    """What systemd-repart writes: PKCS#7 (detached, no signed attributes) over the hex root
    hash, base64 in JSON, padded with NULs to the partition size."""
    c = tmp / "content"
    c.write_text(content if content is not None else root_hash)
    argv = ["openssl", "smime", "-sign", "-binary", "-noattr", "-outform", "DER",
            "-signer", str(ks.verity_cert), "-inkey", str(ks.verity_key), "-in", str(c),
            "-out", str(tmp / "sig.der")]
    if nodetach:
        argv.append("-nodetach")
    subprocess.run(argv, check=True, capture_output=True)
    cert = x509.load_pem_x509_certificate(ks.verity_cert.read_bytes())
    doc = {
        "rootHash": root_hash,
        "certificateFingerprint": hashlib.sha256(
            cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "signature": base64.b64encode((tmp / "sig.der").read_bytes()).decode(),
    }
    return json.dumps(doc).encode().ljust(SIG_PART_BYTES, b"\0")


def root_hash_for(seed: bytes) -> str:
    return hashlib.sha256(seed).hexdigest()


def uuids(root_hash: str) -> tuple[str, str]:
    raw = bytes.fromhex(root_hash)
    return uuid.UUID(bytes=raw[:16]).hex, uuid.UUID(bytes=raw[-16:]).hex


def make_build(d: Path, version: str, ks: keys.KeySet, *, uki_keys: keys.KeySet | None = None,
               sig_keys: keys.KeySet | None = None, cmdline_hash: str | None = None,
               skip: str | None = None) -> dict:
    """A build directory as `anklume build` leaves it (tiny payloads). Returns the paths."""
    d.mkdir(parents=True, exist_ok=True)
    rh = root_hash_for(version.encode())
    du, dv = uuids(rh)
    stem = f"anklume_{version}"
    usr = d / f"{stem}.usr-x86-64.{du}.raw"
    usr.write_bytes(b"hsqs" + bytes(range(256)) * 64 + b"\0" * (3 * 1024 * 1024))
    ver = d / f"{stem}.usr-x86-64-verity.{dv}.raw"
    ver.write_bytes(hashlib.sha256(usr.read_bytes()).digest() * 128)
    sig = d / f"{stem}.usr-x86-64-verity-sig.{uuid.uuid4().hex}.raw"
    tmp = d / ".sigtmp"
    tmp.mkdir(exist_ok=True)
    sig.write_bytes(verity_sig_doc(rh, sig_keys or ks, tmp=tmp))
    shutil.rmtree(tmp)
    uki = make_uki(d / f"{stem}.efi",
                   f"usrhash={cmdline_hash or rh} root=tmpfs mount.usr=/dev/mapper/usr",
                   uki_keys or ks)
    (d / f"{stem}.raw").write_bytes(b"")  # the full disk image: not part of an update
    (d / "build.json").write_text(json.dumps({"version": version, "key_dir": str(ks.dir)}))
    paths = {"usr": usr, "usr-verity": ver, "usr-verity-sig": sig, "uki": uki, "root_hash": rh}
    if skip:
        paths[skip].unlink()
    return paths


@pytest.fixture(scope="session")
def keyset(tmp_path_factory) -> keys.KeySet:
    return keys.generate(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def other_keyset(tmp_path_factory) -> keys.KeySet:
    return keys.generate(tmp_path_factory.mktemp("otherkeys"))
