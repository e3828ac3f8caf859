"""Shipped images against the real Incus: a machine whose image only the OS's catalog has is
created from it, the image is imported once and gets its alias, a second reconcile imports
nothing. The catalog is a busybox tarball described like the build describes its image."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from anklume.agent import images
from anklume.agent.incus_api import Incus, IncusError
from anklume.agent.model import GlobalSettings, Infra
from anklume.agent.reconcile import reconcile
from anklume.agent.validate import load

pytestmark = pytest.mark.incus

REPO = Path(__file__).resolve().parents[2]
NAME = "images:anklume-test/shipped"
ALIAS = "anklume-test/shipped"
PROJECT_NAME = "shiptest"


def _tear_down() -> None:
    report = reconcile(Infra(PROJECT_NAME, GlobalSettings(), ()), prune=True, force=True)
    assert report.ok, [o.error for o in report.result.failed]


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    d = tmp_path / "catalog" / "shipped"
    d.mkdir(parents=True)
    tarball = d / "image.tar.gz"
    subprocess.run([str(REPO / "tests/integration/images/build-busybox"), str(tarball)],
                   check=True, timeout=120)
    fp = hashlib.sha256(tarball.read_bytes()).hexdigest()
    (d / "image.json").write_text(json.dumps({
        "schema": 1, "name": "shipped", "file": tarball.name, "fingerprint": fp,
        "alias": ALIAS, "serves": [NAME]}))
    monkeypatch.setenv("ANKLUME_IMAGE_CATALOG", str(tmp_path / "catalog"))
    incus = Incus()
    _tear_down()
    yield fp
    _tear_down()
    for path in (f"/1.0/images/aliases/{ALIAS}", f"/1.0/images/{fp}"):
        with contextlib.suppress(IncusError):
            incus.request("DELETE", path)


def test_machine_is_created_from_the_shipped_image(catalog, tmp_path, monkeypatch):
    fp = catalog
    incus = Incus()
    doc = {"schema_version": 1, "project_name": PROJECT_NAME,
           "global": {"addressing": {"zone_base": 140}, "default_os_image": NAME},
           "domains": {"shipd": {"machines": {"ship-one": {"ephemeral": True}}}}}
    path = tmp_path / "infra.yml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(IncusError):
        incus.get(f"/1.0/images/{fp}")  # not there before: the agent must import it

    report = reconcile(load(path))
    assert report.ok, [o.error for o in report.result.failed]
    inst = incus.get("/1.0/instances/ship-one", project="shipd")
    assert inst["config"].get("volatile.base_image") == fp, inst["config"]
    assert inst["status"] == "Running"
    assert incus.get(f"/1.0/images/aliases/{ALIAS}")["target"] == fp

    # Already imported: nothing is imported again and nothing changes.
    calls = []
    monkeypatch.setattr(images, "_import", calls.append)
    again = reconcile(load(path))
    assert calls == [] and again.ok
    assert [a.label for a in again.plan] == []  # the firewall too
