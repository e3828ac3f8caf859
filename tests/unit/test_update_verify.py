"""Client-side verification before anything is written: every refusal, typed and precise."""

# ruff: noqa: F811  (pytest fixtures imported from test_update_fixtures, used as arguments)
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from test_update_fixtures import (  # noqa: F401
    keyset,
    make_build,
    make_uki,
    other_keyset,
    verity_sig_doc,
)

from anklume.updates import hashing, manifest, manifest_sig, policy, stage, verity_sig
from anklume.updates.anchors import Anchors
from anklume.updates.errors import (
    FileMismatch,
    Incompatible,
    ManifestInvalid,
    ManifestSignatureInvalid,
    MissingFile,
    PartitionUuidMismatch,
    SourceUnavailable,
    UkiSignatureInvalid,
    UsrHashMismatch,
    VeritySignatureInvalid,
    VersionRefused,
)
from anklume.updates.publish import publish
from anklume.updates.source_local import LocalSource

# A usr-verity-sig partition exactly as systemd-repart (trixie, via mkosi) wrote it in a real
# `anklume build`, and the public certificate of the key that signed it.
REPART_SIG = (
    '{"rootHash":"430b0b4485628c1f7349c86631b7834358406cc66fe2c439659813d25b3a4045","certific'
    'ateFingerprint":"66a3d1fb14e58dedde5f885cbc8668b2e8e2742e00f4eb849c8acbf786f40ed5","sign'
    'ature":"MIIFHwYJKoZIhvcNAQcCoIIFEDCCBQwCAQExDzANBglghkgBZQMEAgEFADALBgkqhkiG9w0BBwGgggNi'
    'MIIDXjCCAkagAwIBAgIUYumfVoJh2q216VWIYvqr5W81guMwDQYJKoZIhvcNAQELBQAwPjEqMCgGA1UEAwwhYW5r'
    'bHVtZSB2ZXJpdHkgYW5kIHVwZGF0ZSBzaWduaW5nMRAwDgYDVQQKDAdhbmtsdW1lMB4XDTI2MTIwMTA0NTcwNloX'
    'DTM2MTEyOTA0NTcwNlowPjEqMCgGA1UEAwwhYW5rbHVtZSB2ZXJpdHkgYW5kIHVwZGF0ZSBzaWduaW5nMRAwDgYD'
    'VQQKDAdhbmtsdW1lMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAhVEILth3zj+DLeJk1qUhq1TNLKWj'
    'UNbuTyXI5IV/gOPvnhlqNcqyeB3CnG0//Hb9Dd01etqJ0/CcwRjSoX3TXQCf9165Ko+3KyOgpSJ5Jbkgjzg+8Cak'
    'PGQ3LKz/I1NPAnGrt1redsYVAkKXaA1198nvTl4xMbJeO/YfIHYH2HKlUGT6bgRRWaUEq3vgO+K65fyYP99IFl4r'
    'ogefBhCAtzcCEegKuobKv040D99w9qmSQHRtr+RNSE5fVfWcUKl8/WT459LrNLsux6VCLQmDsw1MTrb85yf0ULNW'
    'RtHmu6c7Cc/pBdRLpWB1CvY//+1WqL2d1gBrCe2zL0OXhDZPhQIDAQABo1QwUjAMBgNVHRMBAf8EAjAAMB0GA1Ud'
    'DgQWBBSjAyMZ9ti/u1ydTG+WlkmGgMPMgzAOBgNVHQ8BAf8EBAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwMwDQYJ'
    'KoZIhvcNAQELBQADggEBAEG8k5EKFDE6PZVrXg35i5S5afvlQZPbHYRQ+XK/BUXwT+cKN9OKG5Z2/phgSWDmEoOy'
    'oWqCVlzQYCeM8U8Q3Xn+82yza3g4frdqqW/HL6zTDxsNAy+mD/AHClrnrUEsJBfazK17JoGza1iiCAMGfTbW4Lbr'
    'xAQjtI0c+DRN9UyGohdkdr30xpVjXkhsV5oEeMCSETERxNcRPlGAtHxh/TvfY+I2F8PjyK0ox0QhC61Et77Q5wdx'
    'TNtNBRI2+a+eo+bQ5QR3R5Nd0U8rRcJ//VyDNvcCS8+1357WdOhUP2dXt3j1azFs6sJv6MpD+IfueQqhZY/R/g78'
    '1pRQJDCo5JoxggGBMIIBfQIBATBWMD4xKjAoBgNVBAMMIWFua2x1bWUgdmVyaXR5IGFuZCB1cGRhdGUgc2lnbmlu'
    'ZzEQMA4GA1UECgwHYW5rbHVtZQIUYumfVoJh2q216VWIYvqr5W81guMwDQYJYIZIAWUDBAIBBQAwDQYJKoZIhvcN'
    'AQEBBQAEggEACE+JBYUZdK1OOGsj3TLBsdOUE/A552wrvBScdxeXWBj2HASfOZLItHKipJdD0BsBsjlq9Pf8cWz/'
    'jwT17DE06y8yzN75buq1wHcMC2SWuRSykSIcAInWe6iDOx6pr6EYpt8QkQJUgm2phQSg6WBbcKr2qHaLgyeIknx7'
    'E5d4kABOahwxuom2jkAjHv7BN2arNEN9K1o/fYgGmvTmCelpHUn3IT3DcsBiyjfQT51FRJwel5O+AzDpJQY72VcW'
    '6rIqW4f8PQVwNUW3Z465c/tO5MvlBnJ78DZ7YVgBEUzAbD3WsSykwhRD3FI1fD0GuRY4TgDB71+sYzU/6MpGFkkB'
    'Lw=="}'
)
REPART_CERT = (
    '-----BEGIN CERTIFICATE-----\n'
    'MIIDXjCCAkagAwIBAgIUYumfVoJh2q216VWIYvqr5W81guMwDQYJKoZIhvcNAQEL\n'
    'BQAwPjEqMCgGA1UEAwwhYW5rbHVtZSB2ZXJpdHkgYW5kIHVwZGF0ZSBzaWduaW5n\n'
    'MRAwDgYDVQQKDAdhbmtsdW1lMB4XDTI2MTIwMTA0NTcwNloXDTM2MTEyOTA0NTcw\n'
    'NlowPjEqMCgGA1UEAwwhYW5rbHVtZSB2ZXJpdHkgYW5kIHVwZGF0ZSBzaWduaW5n\n'
    'MRAwDgYDVQQKDAdhbmtsdW1lMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKC\n'
    'AQEAhVEILth3zj+DLeJk1qUhq1TNLKWjUNbuTyXI5IV/gOPvnhlqNcqyeB3CnG0/\n'
    '/Hb9Dd01etqJ0/CcwRjSoX3TXQCf9165Ko+3KyOgpSJ5Jbkgjzg+8CakPGQ3LKz/\n'
    'I1NPAnGrt1redsYVAkKXaA1198nvTl4xMbJeO/YfIHYH2HKlUGT6bgRRWaUEq3vg\n'
    'O+K65fyYP99IFl4rogefBhCAtzcCEegKuobKv040D99w9qmSQHRtr+RNSE5fVfWc\n'
    'UKl8/WT459LrNLsux6VCLQmDsw1MTrb85yf0ULNWRtHmu6c7Cc/pBdRLpWB1CvY/\n'
    '/+1WqL2d1gBrCe2zL0OXhDZPhQIDAQABo1QwUjAMBgNVHRMBAf8EAjAAMB0GA1Ud\n'
    'DgQWBBSjAyMZ9ti/u1ydTG+WlkmGgMPMgzAOBgNVHQ8BAf8EBAMCB4AwEwYDVR0l\n'
    'BAwwCgYIKwYBBQUHAwMwDQYJKoZIhvcNAQELBQADggEBAEG8k5EKFDE6PZVrXg35\n'
    'i5S5afvlQZPbHYRQ+XK/BUXwT+cKN9OKG5Z2/phgSWDmEoOyoWqCVlzQYCeM8U8Q\n'
    '3Xn+82yza3g4frdqqW/HL6zTDxsNAy+mD/AHClrnrUEsJBfazK17JoGza1iiCAMG\n'
    'fTbW4LbrxAQjtI0c+DRN9UyGohdkdr30xpVjXkhsV5oEeMCSETERxNcRPlGAtHxh\n'
    '/TvfY+I2F8PjyK0ox0QhC61Et77Q5wdxTNtNBRI2+a+eo+bQ5QR3R5Nd0U8rRcJ/\n'
    '/VyDNvcCS8+1357WdOhUP2dXt3j1azFs6sJv6MpD+IfueQqhZY/R/g781pRQJDCo\n'
    '5Jo=\n'
    '-----END CERTIFICATE-----\n'
)


@pytest.fixture
def pub(tmp_path, keyset):
    """A published 0.2.0 (min 0.1.0) and what a client running 0.1.0 needs."""
    make_build(tmp_path / "build", "0.2.0", keyset)
    out = tmp_path / "out"
    publish(tmp_path / "build", out, min_version="0.1.0")
    return out, Anchors(update_cert=keyset.verity_cert, db_cert=keyset.db_cert)


def prepare(out: Path, anchors: Anchors, tmp: Path, **kw):
    kw.setdefault("running", "0.1.0")
    return stage.prepare(LocalSource(out), tmp / "staging", anchors, **kw)


def reseal(vdir: Path, key: Path, edit=None) -> None:
    """Recompute sizes and hashes after tampering, optionally edit the document, re-sign: so a
    test reaches the check behind the manifest's."""
    doc = json.loads((vdir / "manifest.json").read_text())
    for f in doc["files"]:
        if (vdir / f["name"]).is_file():
            f["size"], f["sha256"] = hashing.digest(vdir / f["name"])
    if edit:
        edit(doc)
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    (vdir / "manifest.json").write_bytes(data)
    (vdir / "manifest.json.sig").write_bytes(manifest_sig.sign(data, key))


def name_of(vdir: Path, role: str) -> str:
    doc = json.loads((vdir / "manifest.json").read_text())
    return next(f["name"] for f in doc["files"] if f["role"] == role)


def test_a_good_update_verifies_and_stages_exactly_its_files(pub, tmp_path):
    out, anchors = pub
    v = prepare(out, anchors, tmp_path)
    assert v.manifest.version == "0.2.0"
    assert sorted(p.name for p in v.dir.iterdir()) == sorted(
        p.name for p in (out / "0.2.0").iterdir())
    for f in v.manifest.files:
        assert hashing.digest(v.dir / f.name) == (f.size, f.sha256)


def test_also_from_the_version_directory_itself(pub, tmp_path):
    out, anchors = pub
    v = stage.prepare(LocalSource(out / "0.2.0"), tmp_path / "s", anchors, running="0.1.0")
    assert v.manifest.version == "0.2.0"


def test_tampered_payload_byte_is_refused_with_the_file_and_both_hashes(pub, tmp_path):
    out, anchors = pub
    usr = out / "0.2.0" / name_of(out / "0.2.0", "usr")
    data = bytearray(usr.read_bytes())
    data[100] ^= 1
    usr.write_bytes(bytes(data))
    with pytest.raises(FileMismatch, match=rf"{usr.name}: SHA-256 [0-9a-f]{{64}}, manifest says"):
        prepare(out, anchors, tmp_path)


def test_wrong_size_is_refused(pub, tmp_path):
    out, anchors = pub
    ver = out / "0.2.0" / name_of(out / "0.2.0", "usr-verity")
    with open(ver, "ab") as f:
        f.write(b"x")
    with pytest.raises(FileMismatch, match=r"size \d+ bytes, manifest says \d+"):
        prepare(out, anchors, tmp_path)


def test_manifest_signed_by_another_key_is_refused_before_any_download(
        pub, tmp_path, other_keyset):
    out, anchors = pub
    reseal(out / "0.2.0", other_keyset.verity_key)
    with pytest.raises(ManifestSignatureInvalid, match="does not verify against"):
        prepare(out, anchors, tmp_path)
    assert not (tmp_path / "staging").exists()


def test_manifest_edited_after_signing_is_refused(pub, tmp_path):
    out, anchors = pub
    m = out / "0.2.0" / "manifest.json"
    m.write_bytes(m.read_bytes().replace(b'"0.1.0"', b'"0.0.1"'))
    with pytest.raises(ManifestSignatureInvalid):
        prepare(out, anchors, tmp_path)


def test_uki_signed_by_another_db_key_is_refused(pub, tmp_path, keyset, other_keyset):
    out, anchors = pub
    vdir = out / "0.2.0"
    rh = json.loads((vdir / "manifest.json").read_text())["root_hash"]
    make_uki(vdir / name_of(vdir, "uki"), f"usrhash={rh} root=tmpfs", other_keyset)
    reseal(vdir, keyset.verity_key)
    with pytest.raises(UkiSignatureInvalid, match="Secure Boot signature does not verify"):
        prepare(out, anchors, tmp_path)


def test_unsigned_uki_is_refused(pub, tmp_path, keyset):
    out, anchors = pub
    vdir = out / "0.2.0"
    rh = json.loads((vdir / "manifest.json").read_text())["root_hash"]
    make_uki(vdir / name_of(vdir, "uki"), f"usrhash={rh}", None)
    reseal(vdir, keyset.verity_key)
    with pytest.raises(UkiSignatureInvalid):
        prepare(out, anchors, tmp_path)


def test_usrhash_mismatch_is_refused(pub, tmp_path, keyset):
    out, anchors = pub
    vdir = out / "0.2.0"
    make_uki(vdir / name_of(vdir, "uki"), f"usrhash={'ab' * 32} root=tmpfs", keyset)
    reseal(vdir, keyset.verity_key)
    with pytest.raises(UsrHashMismatch, match=f"base command line has usrhash={'ab' * 32}, "):
        prepare(out, anchors, tmp_path)


def test_a_profile_cmdline_with_another_usrhash_is_refused(pub, tmp_path, keyset):
    out, anchors = pub
    vdir = out / "0.2.0"
    rh = json.loads((vdir / "manifest.json").read_text())["root_hash"]
    make_uki(vdir / name_of(vdir, "uki"), f"usrhash={rh}", keyset,
             profiles=[None, f"usrhash={'cd' * 32} systemd.unit=rescue.target"])
    reseal(vdir, keyset.verity_key)
    with pytest.raises(UsrHashMismatch, match="profile 1 command line"):
        prepare(out, anchors, tmp_path)


def test_profiles_that_keep_the_usrhash_are_accepted(pub, tmp_path, keyset):
    out, anchors = pub
    vdir = out / "0.2.0"
    rh = json.loads((vdir / "manifest.json").read_text())["root_hash"]
    make_uki(vdir / name_of(vdir, "uki"), f"usrhash={rh}", keyset,
             profiles=[None, f"usrhash={rh} systemd.unit=rescue.target"])
    reseal(vdir, keyset.verity_key)
    assert prepare(out, anchors, tmp_path).root_hash == rh


def test_verity_signature_by_another_key_is_refused(pub, tmp_path, keyset, other_keyset):
    out, anchors = pub
    vdir = out / "0.2.0"
    sig = vdir / name_of(vdir, "usr-verity-sig")
    rh = json.loads((vdir / "manifest.json").read_text())["root_hash"]
    sig.write_bytes(verity_sig_doc(rh, other_keyset, tmp=tmp_path))
    reseal(vdir, keyset.verity_key)
    with pytest.raises(VeritySignatureInvalid, match="signed by certificate"):
        prepare(out, anchors, tmp_path)


def test_verity_signature_by_another_key_without_fingerprint_fails_openssl(
        tmp_path, keyset, other_keyset):
    rh = "11" * 32
    doc = json.loads(verity_sig_doc(rh, other_keyset, tmp=tmp_path).rstrip(b"\0"))
    del doc["certificateFingerprint"]
    p = tmp_path / "sig.raw"
    p.write_text(json.dumps(doc))
    du, dv = verity_sig.partition_uuids(rh)
    with pytest.raises(VeritySignatureInvalid, match="does not verify against"):
        verity_sig.verify(p, keyset.verity_cert, data_uuid=du, verity_uuid=dv)


def test_attached_signature_over_other_content_is_refused(tmp_path, keyset):
    rh = "22" * 32
    p = tmp_path / "sig.raw"
    p.write_bytes(verity_sig_doc(rh, keyset, content="33" * 32, nodetach=True, tmp=tmp_path))
    du, dv = verity_sig.partition_uuids(rh)
    # openssl checks the signature against -content (our root hash), so it fails there.
    with pytest.raises(VeritySignatureInvalid, match=r"sig.raw: PKCS#7 .* does not verify"):
        verity_sig.verify(p, keyset.verity_cert, data_uuid=du, verity_uuid=dv)


def test_attached_signature_over_the_root_hash_is_accepted(tmp_path, keyset):
    rh = "44" * 32
    p = tmp_path / "sig.raw"
    p.write_bytes(verity_sig_doc(rh, keyset, nodetach=True, tmp=tmp_path))
    du, dv = verity_sig.partition_uuids(rh)
    assert verity_sig.verify(p, keyset.verity_cert, data_uuid=du, verity_uuid=dv) == rh


def test_detached_signature_over_another_root_hash_is_refused(tmp_path, keyset):
    rh = "55" * 32
    p = tmp_path / "sig.raw"
    p.write_bytes(verity_sig_doc(rh, keyset, content="66" * 32, tmp=tmp_path))
    du, dv = verity_sig.partition_uuids(rh)
    with pytest.raises(VeritySignatureInvalid, match="does not verify"):
        verity_sig.verify(p, keyset.verity_cert, data_uuid=du, verity_uuid=dv)


def test_the_real_repart_signature_partition_verifies(tmp_path):
    """What systemd-repart wrote in a real build: proves the format and the openssl call."""
    (tmp_path / "verity.crt").write_text("".join(REPART_CERT))
    p = tmp_path / "sig.raw"
    p.write_bytes("".join(REPART_SIG).encode().ljust(16384, b"\0"))
    rh = "430b0b4485628c1f7349c86631b7834358406cc66fe2c439659813d25b3a4045"
    # The UUIDs of that build's split files: anklume_0.1.0.usr-x86-64.430b0b44....raw, ...
    du = str(uuid.UUID("430b0b4485628c1f7349c86631b78343"))
    dv = str(uuid.UUID("58406cc66fe2c439659813d25b3a4045"))
    assert verity_sig.partition_uuids(rh) == (du, dv)
    assert verity_sig.verify(p, tmp_path / "verity.crt", data_uuid=du, verity_uuid=dv) == rh


def test_partition_uuid_not_derived_from_the_root_hash_is_refused(pub, tmp_path, keyset):
    out, anchors = pub
    vdir = out / "0.2.0"
    old = vdir / name_of(vdir, "usr")
    new_uuid = uuid.uuid4()
    new = vdir / f"anklume_0.2.0.usr-x86-64.{new_uuid.hex}.raw"
    old.rename(new)

    def edit(doc):
        f = next(f for f in doc["files"] if f["role"] == "usr")
        f["name"], f["partition_uuid"] = new.name, str(new_uuid)

    reseal(vdir, keyset.verity_key, edit)
    with pytest.raises(PartitionUuidMismatch, match=f"usr partition UUID {new_uuid}"):
        prepare(out, anchors, tmp_path)


def test_older_version_is_refused_unless_allowed(pub, tmp_path):
    out, anchors = pub
    with pytest.raises(VersionRefused, match=r"older than the running version 0.3.0"):
        prepare(out, anchors, tmp_path, running="0.3.0")
    assert not (tmp_path / "staging").exists()
    v = prepare(out, anchors, tmp_path, running="0.3.0", allow_downgrade=True)
    assert v.manifest.version == "0.2.0"


def test_downgrade_still_requires_every_signature(pub, tmp_path, keyset, other_keyset):
    out, anchors = pub
    vdir = out / "0.2.0"
    rh = json.loads((vdir / "manifest.json").read_text())["root_hash"]
    make_uki(vdir / name_of(vdir, "uki"), f"usrhash={rh}", other_keyset)
    reseal(vdir, keyset.verity_key)
    with pytest.raises(UkiSignatureInvalid):
        prepare(out, anchors, tmp_path, running="0.3.0", allow_downgrade=True)


def test_same_version_is_refused_even_with_allow_downgrade(pub, tmp_path):
    out, anchors = pub
    with pytest.raises(VersionRefused, match="is the running version"):
        prepare(out, anchors, tmp_path, running="0.2.0", allow_downgrade=True)


def test_running_below_min_version_is_refused(pub, tmp_path):
    out, anchors = pub
    with pytest.raises(VersionRefused, match=r"updates only from 0.1.0 or later; .* runs 0.0.9"):
        prepare(out, anchors, tmp_path, running="0.0.9", allow_downgrade=True)


def test_a_version_that_failed_before_is_not_offered(pub, tmp_path):
    out, anchors = pub
    with pytest.raises(VersionRefused, match="failed to boot"):
        prepare(out, anchors, tmp_path, failed=frozenset({"0.2.0"}))
    # An older failure does not block a newer version.
    assert prepare(out, anchors, tmp_path, failed=frozenset({"0.1.5"})).manifest.version


def test_missing_file_is_refused(pub, tmp_path):
    out, anchors = pub
    (out / "0.2.0" / name_of(out / "0.2.0", "usr-verity-sig")).unlink()
    with pytest.raises(MissingFile, match=r"usr-x86-64-verity-sig.*not found in"):
        prepare(out, anchors, tmp_path)


@pytest.mark.parametrize("edit,error,match", [
    (lambda d: d.update(format=2), Incompatible, "format 2, this system reads format 1"),
    (lambda d: d.update(product="other"), Incompatible, "product 'other'"),
    (lambda d: d["compat"].update(layout=2), Incompatible, "layout: update 2 vs this system 1"),
    (lambda d: d["compat"].update(usr_slot_bytes=1 << 30), Incompatible, "usr_slot_bytes"),
    (lambda d: d.update(extra=1), ManifestInvalid, "fields"),
    (lambda d: d["files"][3].update(name="../../etc/x.efi"), ManifestInvalid,
     "uki file is named '../../etc/x.efi'"),
    (lambda d: d["files"].pop(), ManifestInvalid, "roles"),
    (lambda d: d["files"].append(dict(d["files"][0])), ManifestInvalid, "roles"),
    (lambda d: d.update(version="1.0-beta"), ManifestInvalid, "not numeric"),
])
def test_manifest_contents_this_client_does_not_know_are_refused(
        pub, tmp_path, keyset, edit, error, match):
    out, anchors = pub
    reseal(out / "0.2.0", keyset.verity_key, edit)
    with pytest.raises(error, match=match):
        prepare(out, anchors, tmp_path)


def test_a_slot_file_bigger_than_its_slot_is_incompatible():
    m = manifest.Manifest(
        version="1", min_version=None, root_hash="ab" * 32, compat={}, files=(
            manifest.FileEntry("x", "usr-verity", 9 * 1024 * 1024, "0" * 64, str(uuid.uuid4())),))
    with pytest.raises(Incompatible, match="does not fit its 8388608-byte slot"):
        manifest.check_compat(m, mine={})


def test_leftovers_in_staging_are_removed_before_staging(pub, tmp_path):
    out, anchors = pub
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "anklume_9.9.9.efi").write_bytes(b"stale")
    v = prepare(out, anchors, tmp_path)
    assert not (staging / "anklume_9.9.9.efi").exists()
    assert v.dir == staging


def test_version_rules_are_numeric_not_lexical():
    policy.check("0.10.0", None, "0.9.0")
    with pytest.raises(VersionRefused):
        policy.check("0.9.0", None, "0.10.0")
    with pytest.raises(VersionRefused):
        policy.check("1.2.0", None, "1.2")


def test_check_reads_only_the_manifest(pub, tmp_path):
    out, anchors = pub
    # Payload missing entirely: check still answers from the signed manifest alone.
    for p in (out / "0.2.0").iterdir():
        if p.suffix in (".raw", ".efi"):
            p.unlink()
    m = stage.check(LocalSource(out), anchors, running="0.1.0")
    assert m.version == "0.2.0"
    shutil.rmtree(out / "0.2.0")
    with pytest.raises(ManifestSignatureInvalid, match=r"/out/0\.2\.0/manifest.json: missing"):
        stage.check(LocalSource(out), anchors, running="0.1.0")
    (out / "latest").unlink()
    with pytest.raises(SourceUnavailable, match=r"neither manifest.json nor latest"):
        stage.check(LocalSource(out), anchors, running="0.1.0")
    with pytest.raises(SourceUnavailable, match="no such directory"):
        stage.check(LocalSource(out / "nothing"), anchors, running="0.1.0")
