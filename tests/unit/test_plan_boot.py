"""Issue #6 in the plan: boot_autostart false is never started, starts follow boot_priority,
and a changed os_image is a recreate (only with --recreate, protected ones only with force)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from test_plan import IMAGE, edit_machine, machine, observed, ops, want
from test_plan_apply import FakeIncus

from anklume.agent.apply import apply
from anklume.agent.plan import KEPT_STOPPED, Op, plan
from anklume.agent.plan_text import format_plan
from anklume.agent.resources import IMAGE_KEY, Kind
from anklume.agent.validate import load


@pytest.fixture(scope="module")
def infra():
    return load(None)  # the embedded default: admin, work, perso


def with_new(infra, *machines):
    return replace(infra, domains=tuple(replace(d, machines=(*d.machines, *machines))
                                        if d.name == "work" else d for d in infra.domains))


def new(infra, name, ip, **kw):
    return replace(machine(infra, "work-web"), name=name, ip=ipaddress.IPv4Address(ip), **kw)


def test_new_machine_with_boot_autostart_false_is_created_not_started(infra):
    i = with_new(infra, new(infra, "work-new", "10.110.0.3", boot_autostart=False))
    p = plan(want(i), observed("default-applied"))
    assert ops(p) == [("create", "instance work/work-new")]
    assert [(n.label, n.reason) for n in p.kept] == [("instance work/work-new", KEPT_STOPPED)]
    assert "= kept instance work/work-new: boot_autostart is false" in format_plan(p)


def test_stopped_machine_with_boot_autostart_false_stays_stopped(infra):
    # In "drifted", perso-box is stopped: it would be started, unless kept stopped.
    p = plan(want(edit_machine(infra, "perso-box", boot_autostart=False)), observed("drifted"))
    assert ("start", "instance perso/perso-box") not in ops(p)
    assert ("update", "instance perso/perso-box") in ops(p)  # the config key itself is set
    assert "instance perso/perso-box" in [n.label for n in p.kept]
    p = plan(want(edit_machine(infra, "perso-box", boot_autostart=True)), observed("drifted"))
    assert ("start", "instance perso/perso-box") in ops(p)


def test_starts_follow_boot_priority_higher_first(infra):
    i = with_new(infra, new(infra, "w-low", "10.110.0.3", boot_priority=10),
                 new(infra, "w-none", "10.110.0.4"),
                 new(infra, "w-high", "10.110.0.5", boot_priority=90))
    p = plan(want(i), observed("default-applied"))
    starts = [[a.name for a in level] for level in p.levels()
              if all(a.op is Op.START for a in level)]
    assert starts == [["w-high"], ["w-low"], ["w-none"]]
    # The executor keeps that order too (no start right after its own creation).
    fake = FakeIncus()
    r = apply(p, fake, workers=8)
    assert not r.failed
    started = [path.split("/")[3] for m, path, _, body in fake.calls
               if path.endswith("/state") and body["action"] == "start"]
    assert started == ["w-high", "w-low", "w-none"]


def test_changed_os_image_says_recreate_needed(infra):
    p = plan(want(edit_machine(infra, "work-web", os_image="other/img")),
             observed("default-applied"))
    assert [(n.label, n.reason) for n in p.conflicts] == [(
        "instance work/work-web", f"os_image changed ({IMAGE} -> other/img): recreate "
        "needed; `apply --recreate` deletes and creates it again")]
    assert ops(p) == []  # the record of the image it has is not overwritten


def test_recreate_refuses_protected_instances_without_force(infra):
    i = edit_machine(infra, "work-web", os_image="other/img")
    p = plan(want(i), observed("default-applied"), recreate=True)
    assert ops(p) == []
    assert "--recreate --force" in p.conflicts[0].reason
    p = plan(want(i), observed("default-applied"), recreate=True, force=True)
    assert ops(p) == [("delete", "instance work/work-web"), ("create", "instance work/work-web"),
                      ("start", "instance work/work-web")]
    assert not p.conflicts
    create = next(a for a in p if a.op is Op.CREATE)
    assert create.desired.config[IMAGE_KEY] == "other/img"
    assert create.desired.image == "other/img"


def test_recreate_of_an_ephemeral_instance_needs_no_force(infra):
    i = edit_machine(infra, "work-web", os_image="other/img", ephemeral=True)
    have = observed("default-applied")
    key = (Kind.INSTANCE, "work", "work-web")
    unprotected = replace(have.get(key), config={
        k: v for k, v in have.get(key).config.items() if k != "security.protection.delete"})
    have = replace(have, resources={**have.resources, key: unprotected})
    p = plan(want(i), have, recreate=True)
    assert [a.op for a in p] == [Op.DELETE, Op.CREATE, Op.START]


def test_instances_record_their_image(infra):
    r = want(infra).get((Kind.INSTANCE, "work", "work-web"))
    assert r.config[IMAGE_KEY] == IMAGE


def test_propagate_is_rslave_on_containers_only(infra):
    from anklume.agent.model import InstanceType, SharedVolumeMount

    sv = (SharedVolumeMount("docs", "/srv/docs", "/docs", readonly=False, propagate=True),)
    lxc = want(edit_machine(infra, "work-web", shared_volumes=sv)).get(
        (Kind.INSTANCE, "work", "work-web"))
    assert dict(lxc.devices["sv-docs"]) == {"type": "disk", "source": "/srv/docs",
                                            "path": "/docs", "shift": "true",
                                            "propagation": "rslave"}
    vm = want(edit_machine(infra, "work-web", shared_volumes=sv, type=InstanceType.VM)).get(
        (Kind.INSTANCE, "work", "work-web"))
    assert dict(vm.devices["sv-docs"]) == {"type": "disk", "source": "/srv/docs",
                                           "path": "/docs"}
