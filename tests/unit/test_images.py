"""Shipped container images: the catalog, which names they serve, and the desired state."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
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
    meta = json.loads(container.metadata("0123456789ab", 1700000000))
    assert meta["architecture"] == "x86_64" and meta["creation_date"] == 1700000000
    assert meta["properties"]["serial"] == "0123456789ab"
    assert meta["templates"]["/etc/hostname"]["template"] == "hostname.tpl"


def _tree(root: Path) -> Path:
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (root / "usr" / "bin" / "tool").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc" / "hostname.link").symlink_to("../usr/bin/tool")
    return root


def test_the_container_image_is_keyed_on_its_tree_not_on_the_build(tmp_path):
    """Issue #18: the same tree built again (new timestamps) reuses the packed tarball byte for
    byte; a changed file, mode or link makes a new one."""
    cache = tmp_path / "packs"
    tree = _tree(tmp_path / "build1" / "root")
    desc, reused = container.pack(tree, tmp_path / "out1", cache)
    assert not reused
    first = (desc.parent / container.TARBALL).read_bytes()
    fingerprint = json.loads(desc.read_text())["fingerprint"]
    assert hashlib.sha256(first).hexdigest() == fingerprint
    meta = subprocess.run(["tar", "--zstd", "-xOf", str(desc.parent / container.TARBALL),
                           "metadata.yaml"], capture_output=True, text=True, check=True).stdout
    assert "version" not in json.loads(meta)["properties"]["description"]

    again = _tree(tmp_path / "build2" / "root")
    os.utime(again / "usr" / "bin" / "tool", (1, 1))  # another build: other timestamps
    desc2, reused = container.pack(again, tmp_path / "out2", cache)
    assert reused and (desc2.parent / container.TARBALL).read_bytes() == first

    for change in (lambda r: (r / "usr" / "bin" / "tool").write_text("#!/bin/sh\necho ho\n"),
                   lambda r: (r / "usr" / "bin" / "tool").chmod(0o700),
                   lambda r: ((r / "etc" / "hostname.link").unlink(),
                              (r / "etc" / "hostname.link").symlink_to("/elsewhere"))):
        other = _tree(tmp_path / f"build-{len(list(tmp_path.iterdir()))}" / "root")
        change(other)
        assert container.tree_digest(other) != container.tree_digest(again)
    # Old packs are pruned, the ones in use kept.
    for i in range(container.KEEP_PACKS + 1):
        t = _tree(tmp_path / f"prune{i}" / "root")
        (t / "usr" / "n").write_text(str(i))
        container.pack(t, tmp_path / f"pout{i}", cache)
    assert len(list(cache.iterdir())) == container.KEEP_PACKS
