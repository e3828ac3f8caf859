"""`anklume publish`: one consistent, signed set of files per version."""

# ruff: noqa: F811  (pytest fixtures imported from test_update_fixtures, used as arguments)
from __future__ import annotations

import json

import pytest
from test_update_fixtures import keyset, make_build, other_keyset  # noqa: F401

from anklume.updates import manifest, manifest_sig, publish
from anklume.updates.errors import PublishRefused


def test_publish_writes_signed_manifest_and_exactly_the_four_files(tmp_path, keyset):
    b = make_build(tmp_path / "build", "0.2.0", keyset)
    dest = publish.publish(tmp_path / "build", tmp_path / "out", min_version="0.1.0")
    assert dest == tmp_path / "out" / "0.2.0"
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted([b[r].name for r in manifest.ROLES]
                           + ["manifest.json", "manifest.json.sig"])
    data = (dest / "manifest.json").read_bytes()
    manifest_sig.verify(data, (dest / "manifest.json.sig").read_bytes(), keyset.verity_cert,
                        where="test")
    m = manifest.parse(data)
    assert (m.version, m.min_version, m.root_hash) == ("0.2.0", "0.1.0", b["root_hash"])
    assert m.compat["usr_slot_bytes"] == 512 * 1024 * 1024 and m.compat["layout"] == 1
    usr = m.file("usr")
    assert usr.size == b["usr"].stat().st_size
    assert usr.partition_uuid.replace("-", "") == b["root_hash"][:32]
    assert m.file("usr-verity").partition_uuid.replace("-", "") == b["root_hash"][32:]
    assert m.file("uki").partition_uuid is None
    assert (tmp_path / "out" / "latest").read_text() == "0.2.0\n"
    doc = json.loads(data)
    assert [f["role"] for f in doc["files"]] == list(manifest.ROLES)


def test_publish_refuses_to_replace_a_published_version(tmp_path, keyset):
    make_build(tmp_path / "build", "0.2.0", keyset)
    dest = publish.publish(tmp_path / "build", tmp_path / "out")
    before = (dest / "manifest.json").read_bytes()
    with pytest.raises(PublishRefused, match="already exists"):
        publish.publish(tmp_path / "build", tmp_path / "out")
    assert (dest / "manifest.json").read_bytes() == before


def test_publish_refuses_two_versions_in_one_build_dir(tmp_path, keyset):
    make_build(tmp_path / "build", "0.2.0", keyset)
    make_build(tmp_path / "build", "0.3.0", keyset)
    with pytest.raises(PublishRefused, match=r"several versions \(0\.2\.0: .*; 0\.3\.0: "):
        publish.publish(tmp_path / "build", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("role", ["usr", "usr-verity", "usr-verity-sig"])
def test_publish_refuses_a_missing_role(tmp_path, keyset, role):
    make_build(tmp_path / "build", "0.2.0", keyset, skip=role)
    with pytest.raises(PublishRefused, match=f"no {role} file for 0.2.0"):
        publish.publish(tmp_path / "build", tmp_path / "out")


def test_publish_refuses_a_build_that_would_not_verify(tmp_path, keyset, other_keyset):
    make_build(tmp_path / "build", "0.2.0", keyset, uki_keys=other_keyset)
    with pytest.raises(PublishRefused, match=r"does not verify: .*Secure Boot signature"):
        publish.publish(tmp_path / "build", tmp_path / "out")
    # Nothing half-written is left under the output directory.
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_latest_never_moves_backwards(tmp_path, keyset):
    make_build(tmp_path / "b3", "0.3.0", keyset)
    make_build(tmp_path / "b2", "0.2.5", keyset)
    publish.publish(tmp_path / "b3", tmp_path / "out")
    publish.publish(tmp_path / "b2", tmp_path / "out")
    assert (tmp_path / "out" / "latest").read_text() == "0.3.0\n"
    assert (tmp_path / "out" / "0.2.5" / "manifest.json").is_file()


def test_min_version_newer_than_the_version_is_refused(tmp_path, keyset):
    make_build(tmp_path / "build", "0.2.0", keyset)
    with pytest.raises(PublishRefused, match=r"newer than 0.2.0"):
        publish.publish(tmp_path / "build", tmp_path / "out", min_version="0.3")
