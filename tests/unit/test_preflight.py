"""The checks reconcile makes against the system before applying (agent/preflight.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from anklume.agent import preflight
from anklume.agent.desired import desired
from anklume.agent.incus_api import IncusError
from anklume.agent.model import InstanceType, PersistentVolume, SharedVolumeMount
from anklume.agent.validate import load

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /dev/shm rw,nosuid shared:2 - tmpfs tmpfs rw
31 22 0:27 / /srv/anklume rw shared:3 - tmpfs tmpfs rw
32 31 8:2 / /srv/anklume/data rw shared:4 - ext4 /dev/sda2 rw
33 22 0:28 / /mnt/with\\040space rw - ramfs ramfs rw
"""


class FakeIncus:
    def __init__(self, pools=("default",), idmapped="true"):
        self.pools, self.idmapped = pools, idmapped

    def get(self, path, **kw):
        if path == "/1.0":
            return {"environment": {"kernel_features": {"idmapped_mounts": self.idmapped}}}
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/1.0/storage-pools/") and name not in self.pools:
            raise IncusError("Storage pool not found")
        return {}


def state(persistent_base="/srv/anklume/data", shares_base="/srv/anklume/shares", vm=False):
    infra = load(None)
    s = replace(infra.settings, persistent_data_base=persistent_base)
    domains = tuple(replace(d, machines=tuple(
        replace(m, type=InstanceType.VM if vm else m.type,
                persistent_data=(PersistentVolume("db", "/db"),),
                shared_volumes=(SharedVolumeMount("docs", f"{shares_base}/docs", "/docs",
                                                  readonly=False),))
        if m.name == "work-dev" else m for m in d.machines)) for d in infra.domains)
    return desired(replace(infra, settings=s, domains=domains), default_image="x")


def test_mountinfo_is_parsed_with_escapes():
    table = preflight.mounts(MOUNTINFO)
    assert ("/mnt/with space", "ramfs") in table
    assert preflight.fs_of("/srv/anklume/data/x", table) == ("/srv/anklume/data", "ext4")
    assert preflight.fs_of("/srv/anklume/shares", table) == ("/srv/anklume", "tmpfs")
    assert preflight.fs_of("/srv/anklumex", table) == ("/", "ext4")


@pytest.fixture
def as_if_all_exist(monkeypatch):
    # The mount table is made up: check the paths themselves, not this host's parents.
    monkeypatch.setattr(preflight, "existing_parent", lambda p: p)


def test_volumes_on_tmpfs_are_named_with_their_machine(as_if_all_exist):
    errors = preflight.volatile_dirs(state(), MOUNTINFO)
    assert errors == ["machine work/work-dev: sv-docs keeps its data in /srv/anklume/shares/docs, "
                      "on a tmpfs (/srv/anklume) that is lost at reboot: put it on persistent "
                      "storage (global.persistent_data_base, global.shared_volumes_base or the "
                      "volume's source)"]


def test_nearest_existing_parent_is_what_is_checked(tmp_path):
    assert preflight.existing_parent(str(tmp_path / "a" / "b")) == str(tmp_path)


def test_ramfs_is_refused_too(as_if_all_exist):
    errors = preflight.volatile_dirs(state(persistent_base="/mnt/with space/data",
                                           shares_base="/var"), MOUNTINFO)
    assert len(errors) == 1 and "pd-db" in errors[0] and "ramfs" in errors[0]


def test_all_good():
    assert preflight.check(state(shares_base="/var"), FakeIncus(), MOUNTINFO) == []


def test_missing_storage_pool_is_named():
    errors = preflight.check(state(shares_base="/var"), FakeIncus(pools=()), MOUNTINFO)
    assert errors == ['storage pool "default" is not usable (Storage pool not found): create it '
                      "in Incus (incus storage create) before applying"]


def test_shifted_volumes_need_idmapped_mounts():
    errors = preflight.check(state(shares_base="/var"), FakeIncus(idmapped="false"), MOUNTINFO)
    assert len(errors) == 1 and "work/work-dev" in errors[0] and "idmapped" in errors[0]
    # VMs share directories without an idmap: nothing to ask of the kernel.
    assert preflight.check(state(shares_base="/var", vm=True), FakeIncus(idmapped="false"),
                           MOUNTINFO) == []


def test_lxc_volumes_are_shifted_vm_ones_not():
    lxc = state().get(("instance", "work", "work-dev"))
    assert lxc.devices["pd-db"]["shift"] == "true" and lxc.devices["sv-docs"]["shift"] == "true"
    vm = state(vm=True).get(("instance", "work", "work-dev"))
    assert "shift" not in vm.devices["pd-db"] and "shift" not in vm.devices["sv-docs"]


def test_a_symlink_out_of_a_data_root_is_refused_with_its_target(tmp_path):
    """#20: a share written under the root, made to lead to / by a link a machine planted in
    another share it can write. Real links: the check resolves them on this system."""
    shares = tmp_path / "shares"
    (shares / "team").mkdir(parents=True)
    (shares / "docs").symlink_to("/")
    errors = preflight.escaping_dirs(state(shares_base=str(shares)), [str(shares)])
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"machine work/work-dev: sv-docs takes {shares}/docs, which a "
                                "symlink leads to /, outside ")
    # A link that stays inside the root, and a root that is itself a link, are fine.
    (shares / "docs").unlink()
    (shares / "docs").symlink_to(shares / "team")
    assert preflight.escaping_dirs(state(shares_base=str(shares)), [str(shares)]) == []
    (tmp_path / "via").symlink_to(shares)
    assert preflight.escaping_dirs(state(shares_base=str(tmp_path / "via")),
                                   [str(tmp_path / "via")]) == []


def test_a_missing_source_is_judged_by_its_existing_part(tmp_path):
    (tmp_path / "out").symlink_to("/etc")
    assert preflight.resolved(str(tmp_path / "out" / "a" / "b")) == "/etc/a/b"
    assert preflight.resolved(str(tmp_path / "none" / "x")) == str(tmp_path / "none" / "x")


def test_check_runs_the_symlink_check_on_the_roots_it_is_given(tmp_path):
    shares = tmp_path / "shares"
    shares.mkdir()
    (shares / "docs").symlink_to("/")
    want = state(shares_base=str(shares))
    errors = preflight.check(want, FakeIncus(), MOUNTINFO, roots=[str(shares)])
    assert len(errors) == 1 and "a symlink leads to /" in errors[0]
