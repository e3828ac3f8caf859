import json
import struct

import pytest

from anklume import uki as ukifile
from anklume.image import artifacts

HASH = "a" * 32 + "b" * 32


def make_pe(sections: dict[str, bytes]) -> bytes:
    """A minimal PE image: DOS stub pointer, PE signature, COFF header, section table, data."""
    pe_off = 0x40
    table = pe_off + 24
    data_off = table + 40 * len(sections)
    head = bytearray(b"MZ" + b"\0" * (pe_off - 2))
    struct.pack_into("<I", head, 0x3C, pe_off)
    head += b"PE\0\0" + struct.pack("<HHIIIHH", 0x8664, len(sections), 0, 0, 0, 0, 0)
    body = b""
    for name, content in sections.items():
        raw = content + b"\0" * (-len(content) % 512)  # padded like a linker does
        head += name.encode().ljust(8, b"\0") + struct.pack(
            "<IIII", len(content), 0x1000, len(raw), data_off + len(body)
        ) + b"\0" * 16
        body += raw
    return bytes(head) + body


def test_section_reads_exact_length(tmp_path):
    f = tmp_path / "x.efi"
    cmdline = b"root=tmpfs usrhash=" + HASH.encode()
    f.write_bytes(make_pe({".osrel": b"ID=x\n", ".cmdline": cmdline}))
    assert ukifile.section(f, ".cmdline") == b"root=tmpfs usrhash=" + HASH.encode()
    assert ukifile.section(f, ".osrel") == b"ID=x\n"
    assert ukifile.section(f, ".linux") is None
    assert ukifile.cmdline(f) == f"root=tmpfs usrhash={HASH}"


def test_section_rejects_non_pe(tmp_path):
    f = tmp_path / "x.efi"
    f.write_bytes(b"\x7fELF" + b"\0" * 100)
    with pytest.raises(ukifile.NotPE):
        ukifile.section(f, ".cmdline")


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (f"root=tmpfs usrhash={HASH} console=ttyS0", HASH),
        (f"usrhash={HASH}", HASH),
        (f"roothash={HASH}", None),
        (f"usrhash={HASH}x", None),
        (f"usrhash={HASH} usrhash={'c' * 64}", None),
        ("root=tmpfs", None),
    ],
)
def test_usr_hash(cmdline, expected):
    assert ukifile.usr_hash(cmdline) == expected


def fake_build(d, version="1.2.3", split=True):
    stem = f"anklume_{version}"
    (d / f"{stem}.raw").write_bytes(b"\0" * 10)
    (d / f"{stem}.efi").write_bytes(make_pe({".cmdline": f"usrhash={HASH} ro".encode()}))
    if split:
        for kind, uuid in (("usr-x86-64", "u1"), ("usr-x86-64-verity", "v1"),
                           ("usr-x86-64-verity-sig", "s1")):
            (d / f"{stem}.{kind}.{uuid}.raw").write_bytes(b"x")
    return stem


def test_find_reads_outputs(tmp_path):
    stem = fake_build(tmp_path)
    (tmp_path / "build.json").write_text(json.dumps({"key_dir": str(tmp_path / "keys")}))
    a = artifacts.find(tmp_path, version="1.2.3")
    assert a.version == "1.2.3" and a.image_id == "anklume"
    assert a.raw.name == f"{stem}.raw" and a.uki.name == f"{stem}.efi"
    assert a.usr_hash == HASH
    assert a.usr.name == f"{stem}.usr-x86-64.u1.raw"
    assert a.usr_verity.name == f"{stem}.usr-x86-64-verity.v1.raw"
    assert a.usr_verity_sig.name == f"{stem}.usr-x86-64-verity-sig.s1.raw"
    assert a.split_partitions == [a.usr, a.usr_verity, a.usr_verity_sig]
    assert a.key_dir == tmp_path / "keys"
    assert a.db_cert == tmp_path / "keys" / "db.crt"


def test_find_defaults_to_source_version(tmp_path):
    from anklume import __version__

    fake_build(tmp_path, version=__version__, split=False)
    a = artifacts.find(tmp_path, key_dir=tmp_path)
    assert a.version == __version__
    assert a.usr is None and a.split_partitions == []


def test_find_missing_image_explains(tmp_path):
    with pytest.raises(artifacts.ArtifactsNotFound, match="scripts/build"):
        artifacts.find(tmp_path, version="9.9")


def test_find_rejects_stale_split_files(tmp_path):
    stem = fake_build(tmp_path)
    (tmp_path / f"{stem}.usr-x86-64.u2.raw").write_bytes(b"x")
    with pytest.raises(artifacts.ArtifactsNotFound, match="several"):
        artifacts.find(tmp_path, version="1.2.3", key_dir=tmp_path)
