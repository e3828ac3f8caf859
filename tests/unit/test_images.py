"""Shipped container images: the catalog, which names they serve, and the desired state."""

from __future__ import annotations

import json
from pathlib import Path

from anklume.agent import images
from anklume.agent.desired import desired
from anklume.agent.resources import Kind
from anklume.agent.validate import load
from anklume.image import container


def _catalog(root: Path, name: str, serves: list[str], fp: str = "ab" * 32) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "image.tar.zst").write_bytes(b"x")
    (d / "image.json").write_text(json.dumps({
        "schema": 1, "name": name, "file": "image.tar.zst", "fingerprint": fp,
        "alias": f"anklume/{name}", "serves": serves}))
    return d


def test_default_infra_is_served_by_the_image_the_build_ships():
    """The embedded default names an image server; the build's shipped image stands in for it,
    so the default deploys offline."""
    state = desired(load(None))
    assert images.wanted(state) <= set(container.SERVES), images.wanted(state)


def test_catalog_reads_descriptions_and_skips_broken_ones(tmp_path):
    _catalog(tmp_path, "debian-13", ["images:debian/13"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "image.json").write_text("{not json")
    cat = images.catalog(tmp_path)
    assert [s.name for s in cat] == ["debian-13"]
    assert cat[0].tarball == tmp_path / "debian-13" / "image.tar.zst"
    assert images.catalog(tmp_path / "missing") == []


def test_resolve_and_substitute_only_touch_served_names(tmp_path):
    _catalog(tmp_path, "debian-13", ["images:debian/13", "debian/13"], fp="cd" * 32)
    shipped = images.catalog(tmp_path)
    got = images.resolve({"images:debian/13", "anklume/busybox"}, shipped)
    assert list(got) == ["images:debian/13"]

    state = desired(load(None), default_image=None)
    swapped = images.substitute(state, {"images:debian/13": "cd" * 32})
    for r in swapped.of_kind(Kind.INSTANCE):
        assert r.image == "cd" * 32, r
    # Everything else is the same resource, and the input state is unchanged.
    assert len(swapped.resources) == len(state.resources)
    assert all(r.image == "images:debian/13" for r in state.of_kind(Kind.INSTANCE))
    assert images.substitute(state, {}) is state


def test_container_metadata_is_what_incus_expects():
    meta = json.loads(container.metadata("1.2.3", 1700000000))
    assert meta["architecture"] == "x86_64" and meta["creation_date"] == 1700000000
    assert meta["properties"]["serial"] == "1.2.3"
    assert meta["templates"]["/etc/hostname"]["template"] == "hostname.tpl"
