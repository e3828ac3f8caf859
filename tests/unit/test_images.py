"""Shipped container images: the catalog, which names they serve, and the desired state."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from anklume.agent import images, incus_state
from anklume.agent.apply import apply
from anklume.agent.desired import desired
from anklume.agent.model import frozen_map
from anklume.agent.plan import Op, Plan, plan
from anklume.agent.plan_text import format_plan
from anklume.agent.resources import Kind, Resource, State
from anklume.agent.validate import load
from anklume.errors import CommandError
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


def test_with_shipped_serves_the_names_and_wants_the_image_imported_first(tmp_path):
    _catalog(tmp_path, "debian-13", ["images:debian/13", "debian/13"], fp="cd" * 32)
    shipped = images.catalog(tmp_path)
    got = images.resolve({"images:debian/13", "anklume/busybox"}, shipped)
    assert list(got) == ["images:debian/13"]

    state = desired(load(None), default_image=None)
    swapped = images.with_shipped(state, shipped)
    for r in swapped.of_kind(Kind.INSTANCE):
        assert r.image == "cd" * 32, r
    (img,) = swapped.of_kind(Kind.IMAGE)
    assert (img.name, img.description, dict(img.config), img.image) == (
        "cd" * 32, "debian-13", {"alias": "anklume/debian-13"},
        str(tmp_path / "debian-13" / "image.tar.zst"))
    # Everything else is the same resource, and the input state is unchanged.
    assert len(swapped.resources) == len(state.resources) + 1
    assert all(r.image == "images:debian/13" for r in state.of_kind(Kind.INSTANCE))
    assert images.with_shipped(state, []) is state

    # The plan imports it before the instances, which depend on it; an image Incus has (its
    # alias on it) is in sync, and one whose alias points elsewhere gets it back.
    p = plan(swapped, State())
    imp = next(a for a in p if a.kind is Kind.IMAGE)
    assert imp.op is Op.CREATE and imp.level < min(a.level for a in p
                                                   if a.kind is Kind.INSTANCE)
    creates = [a for a in p if a.kind is Kind.INSTANCE and a.op is Op.CREATE]
    assert creates and all(imp.key in a.depends_on for a in creates)
    # Into the default project, which always exists: on the first level, beside the projects
    # and bridges (the longest step of a first deploy does not wait for them).
    assert {a.kind for a in p.levels()[0]} == {Kind.PROJECT, Kind.NETWORK, Kind.IMAGE}
    assert "+ image " + "cd" * 32 in format_plan(p)
    have = State.of([Resource(Kind.IMAGE, "cd" * 32,
                              config=frozen_map({"aliases": "anklume/debian-13"}))])
    assert not [a for a in plan(swapped, have) if a.kind is Kind.IMAGE]
    moved = State.of([Resource(Kind.IMAGE, "cd" * 32, config=frozen_map({"aliases": ""}))])
    (upd,) = [a for a in plan(swapped, moved) if a.kind is Kind.IMAGE]
    assert upd.op is Op.UPDATE and upd.changes[0].new == "anklume/debian-13"


def test_observed_images_carry_the_aliases_pointing_at_them():
    state = incus_state.parse({"images": [
        {"fingerprint": "ef" * 32, "aliases": [{"name": "b"}, {"name": "a"}]},
        {"fingerprint": "01" * 32, "aliases": None}]})
    assert state.get((Kind.IMAGE, "", "ef" * 32)).config["aliases"] == "a,b"
    assert state.get((Kind.IMAGE, "", "01" * 32)).config["aliases"] == ""


def test_a_failed_import_skips_the_instances_that_need_it(tmp_path, monkeypatch):
    """Failure injection: the import fails; nothing is created from another source instead,
    and the apply says which image failed."""
    _catalog(tmp_path, "debian-13", ["images:debian/13"], fp="cd" * 32)
    want = images.with_shipped(desired(load(None), default_image=None),
                               images.catalog(tmp_path))
    only = [a for a in plan(want, State()) if a.kind in (Kind.IMAGE, Kind.INSTANCE)]

    def fail(tarball: str) -> None:
        raise CommandError(["incus", "image", "import", tarball], 1, "Error: bad tarball")
    monkeypatch.setattr(images, "_import", fail)

    class NoIncus:
        def get(self, *a, **k):
            raise AssertionError("not reached")
        request = get
    result = apply(Plan(actions=tuple(only)), NoIncus(), nft_write=lambda fw: None)
    (failed,) = result.failed
    assert failed.action.kind is Kind.IMAGE and "bad tarball" in failed.error
    assert result.skipped and all(o.action.kind is Kind.INSTANCE for o in result.skipped)
    creates = [o for o in result.skipped if o.action.op is Op.CREATE]
    assert creates and all(o.skipped == f"image {'cd' * 32} failed" for o in creates)
    assert not result.done


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
