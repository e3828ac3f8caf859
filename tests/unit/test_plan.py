"""Planner tests: desired state from an Infra + observed state recorded from a real Incus
(tests/unit/fixtures/*.json, captured with incus_state.read_raw) -> expected actions."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from pathlib import Path

import pytest

from anklume.agent.desired import desired
from anklume.agent.firewall import Firewall
from anklume.agent.incus_state import parse
from anklume.agent.model import (
    Infra,
    InstanceType,
    Machine,
    PersistentVolume,
    Profile,
    SharedVolumeMount,
)
from anklume.agent.plan import FIREWALL_KEY, Op, plan
from anklume.agent.resources import OWNER_KEY, Kind
from anklume.agent.validate import load

FIXTURES = Path(__file__).parent / "fixtures"
IMAGE = "anklume/busybox"


def observed(name: str):
    return parse(json.loads((FIXTURES / f"{name}.json").read_text()))


@pytest.fixture(scope="module")
def infra() -> Infra:
    return load(None)  # the embedded default: admin, work, perso


def want(infra: Infra):
    return desired(infra, default_image=IMAGE)


def machine(infra: Infra, name: str) -> Machine:
    return next(m for d in infra.domains for m in d.machines if m.name == name)


def edit_machine(infra: Infra, name: str, **changes) -> Infra:
    domains = tuple(replace(d, machines=tuple(replace(m, **changes) if m.name == name else m
                                              for m in d.machines)) for d in infra.domains)
    return replace(infra, domains=domains)


def without_domain(infra: Infra, name: str) -> Infra:
    return replace(infra, domains=tuple(d for d in infra.domains if d.name != name))


def ops(p) -> list[tuple[str, str]]:
    return [(a.op.value, a.label) for a in p]


def with_table(state, fw=None):
    """`state` with the firewall observed: `fw`, or no table at all."""
    return replace(state, firewall=fw if fw is not None else Firewall())


# desired ---------------------------------------------------------------------------------------

def test_desired_default_infra_maps_domains_onto_incus(infra):
    d = want(infra)
    assert sorted(r.name for r in d.of_kind(Kind.PROJECT)) == ["admin", "perso", "work"]
    work = d.get((Kind.PROJECT, "", "work"))
    assert work.config["features.images"] == "false"
    assert work.config["features.profiles"] == "true"
    assert work.config[OWNER_KEY] == "anklume"
    net = d.get((Kind.NETWORK, "default", "net-work"))
    assert dict(net.config) == {
        "ipv4.address": "10.110.0.254/24", "ipv4.nat": "true", "ipv6.address": "none",
        "ipv4.dhcp.ranges": "10.110.0.100-10.110.0.199", OWNER_KEY: "anklume"}
    prof = d.get((Kind.PROFILE, "work", "default"))
    assert dict(prof.devices["eth0"]) == {"type": "nic", "name": "eth0", "network": "net-work"}
    assert dict(prof.devices["root"]) == {"type": "disk", "path": "/", "pool": "default"}
    ctl = d.get((Kind.INSTANCE, "admin", "admin-ctl"))
    assert ctl.devices["eth0"]["ipv4.address"] == "10.100.0.10"
    assert ctl.config["security.protection.delete"] == "true"
    assert ctl.image == IMAGE and ctl.instance_type == "container"
    assert ctl.profiles == ("default",)


def test_desired_machine_options(infra):
    i = edit_machine(infra, "work-dev", gpu=True, ephemeral=True, boot_autostart=True,
                     boot_priority=42, snapshots_schedule="0 3 * * *", snapshots_expiry="7d",
                     os_image="local-deb", config={"limits.cpu": "2"},
                     devices={"data": {"type": "disk", "source": "/srv/x", "path": "/x"}},
                     persistent_data=(PersistentVolume("home", "/home", readonly=True),),
                     shared_volumes=(SharedVolumeMount("docs", "/srv/anklume/shares/docs",
                                                       "/docs", readonly=False, shift=True),))
    r = want(i).get((Kind.INSTANCE, "work", "work-dev"))
    assert "security.protection.delete" not in r.config  # ephemeral: deletable
    assert r.config["boot.autostart"] == "true"
    assert r.config["boot.autostart.priority"] == "42"
    assert r.config["snapshots.schedule"] == "0 3 * * *"
    assert r.config["snapshots.expiry"] == "7d"
    assert r.config["limits.cpu"] == "2"
    assert dict(r.devices["gpu"]) == {"type": "gpu"}
    assert dict(r.devices["pd-home"]) == {
        "type": "disk", "path": "/home", "readonly": "true", "shift": "true",
        "source": "/srv/anklume/data/work/work-dev/home"}
    assert dict(r.devices["sv-docs"]) == {
        "type": "disk", "source": "/srv/anklume/shares/docs", "path": "/docs", "shift": "true"}
    assert r.devices["data"]["source"] == "/srv/x"
    assert r.image == "local-deb"  # its own image wins over --default-image


def test_desired_disabled_domain_creates_nothing(infra):
    i = replace(infra, domains=tuple(replace(d, enabled=d.name != "perso")
                                     for d in infra.domains))
    assert not [r for r in want(i).resources.values() if "perso" in (r.name, r.project)]


def test_desired_domain_profiles_carry_the_marker(infra):
    i = replace(infra, domains=tuple(
        replace(d, profiles=(Profile("big", {"limits.memory": "1GiB"}),)) if d.name == "work"
        else d for d in infra.domains))
    i = edit_machine(i, "work-dev", profiles=("default", "big"))
    d = want(i)
    assert dict(d.get((Kind.PROFILE, "work", "big")).config) == {
        "limits.memory": "1GiB", OWNER_KEY: "anklume"}
    p = plan(d, observed("default-applied"))
    assert ops(p) == [("create", "profile work/big"), ("update", "instance work/work-dev")]
    upd = p.actions[1]
    assert (Kind.PROFILE, "work", "big") in upd.depends_on
    assert upd.level > p.actions[0].level


# plan ------------------------------------------------------------------------------------------

def test_fresh_daemon_creates_everything_in_dependency_order(infra):
    p = plan(want(infra), with_table(observed("fresh")))
    levels = [[(a.op.value, a.kind.value) for a in lvl] for lvl in p.levels()]
    assert {k for _, k in levels[0]} == {"project", "network"}
    assert {k for _, k in levels[1]} == {"profile", "firewall"}
    assert {k for _, k in levels[2]} == {"instance"} and len(levels[2]) == 4
    assert {o for o, _ in levels[3]} == {"start"} and len(levels[3]) == 4
    # Nothing starts before the isolation firewall is in place.
    assert all(FIREWALL_KEY in a.depends_on for a in levels_actions(p, Op.START))
    assert not p.conflicts and not p.kept


def levels_actions(p, op):
    return [a for a in p if a.op is op]


def test_applied_state_plans_nothing_and_says_why(infra):
    d = want(infra)
    p = plan(d, with_table(observed("default-applied"), d.firewall))
    assert list(p) == []
    assert p.why_empty() == \
        "No changes: 3 projects, 3 networks, 3 profiles, 4 instances already match"


def test_ip_change_is_an_in_place_update_that_needs_a_restart(infra):
    i = edit_machine(infra, "work-web", ip=ipaddress.IPv4Address("10.110.0.7"))
    p = plan(want(i), observed("default-applied"))
    assert ops(p) == [("update", "instance work/work-web")]
    a = p.actions[0]
    assert [(c.key, c.old, c.new) for c in a.changes] == [
        ("devices.eth0.ipv4.address", "10.110.0.2", "10.110.0.7")]
    assert a.needs_restart


def test_config_only_change_needs_no_restart(infra):
    i = edit_machine(infra, "work-web", config={"limits.cpu": "1"})
    a = plan(want(i), observed("default-applied")).actions[0]
    assert [(c.key, c.old, c.new) for c in a.changes] == [("config.limits.cpu", None, "1")]
    assert not a.needs_restart


def test_added_machine_is_created_and_started(infra):
    extra = replace(machine(infra, "work-web"), name="work-new",
                    ip=ipaddress.IPv4Address("10.110.0.3"))
    i = replace(infra, domains=tuple(replace(d, machines=(*d.machines, extra))
                                     if d.name == "work" else d for d in infra.domains))
    p = plan(want(i), observed("default-applied"))
    assert ops(p) == [("create", "instance work/work-new"), ("start", "instance work/work-new")]


def test_drift_is_corrected_and_orphans_listed_without_prune(infra):
    p = plan(want(infra), observed("drifted"))
    assert ops(p) == [("update", "instance admin/admin-ctl"), ("start", "instance perso/perso-box"),
                      ("update", "instance work/work-web")]
    by = {a.label: a for a in p}
    assert [(c.key, c.old, c.new) for c in by["instance admin/admin-ctl"].changes] == [
        ("profiles", "default,used", "default")]
    assert [(c.key, c.old, c.new) for c in by["instance work/work-web"].changes] == [
        ("config.limits.memory", "256MiB", None)]
    assert not by["instance work/work-web"].needs_restart
    assert {n.label for n in p.kept} == {"profile admin/extra", "profile admin/used"}
    # The instance created by hand (no marker) is neither changed nor listed.
    assert not [x for x in list(p) + list(p.kept) if "manual" in x.label]
    # Neither is a network owned by another anklume project_name.
    assert not [x for x in list(p) + list(p.kept) if "foreign" in x.label]


def test_prune_deletes_orphan_profiles_after_their_users_let_go(infra):
    p = plan(want(infra), observed("drifted"), prune=True)
    dels = [a for a in p if a.op is Op.DELETE]
    assert [a.label for a in dels] == ["profile admin/extra", "profile admin/used"]
    upd = next(a for a in p if a.label == "instance admin/admin-ctl")
    assert all(d.level > upd.level for d in dels)


def test_removed_domain_is_listed_not_deleted_without_prune(infra):
    p = plan(want(without_domain(infra, "work")), observed("default-applied"))
    assert list(p) == []
    assert {n.label for n in p.kept} == {"instance work/work-dev", "instance work/work-web",
                                         "project work", "network net-work"}


def test_prune_keeps_protected_instances_and_what_they_need(infra):
    p = plan(want(without_domain(infra, "work")), observed("default-applied"), prune=True)
    assert list(p) == []
    reasons = {n.label: n.reason for n in p.kept}
    assert "security.protection.delete=true" in reasons["instance work/work-dev"]
    assert "still needed by instance work/work-dev" in reasons["project work"]
    assert "still needed by" in reasons["network net-work"]


def test_prune_force_deletes_a_removed_domain_innermost_first(infra):
    p = plan(want(without_domain(infra, "work")), observed("default-applied"),
             prune=True, force=True)
    assert ops(p) == [("delete", "instance work/work-dev"), ("delete", "instance work/work-web"),
                      ("delete", "project work"), ("delete", "network net-work")]
    levels = [a.level for a in p]
    assert levels == sorted(levels) and levels[0] < levels[2] < levels[3]
    assert not p.kept


def test_unmarked_resources_are_never_touched_even_with_prune_force(infra):
    p = plan(desired(replace(infra, project_name="someone-else", domains=())),
             observed("default-applied"), prune=True, force=True)
    assert list(p) == [] and not p.kept


def test_declared_resource_owned_by_someone_else_is_a_conflict(infra):
    p = plan(want(replace(infra, project_name="other")), observed("default-applied"))
    conflicts = {n.label: n.reason for n in p.conflicts}
    assert "not anklume's" in conflicts["project work"]
    assert "owned by project_name 'anklume'" in conflicts["network net-work"]
    # Everything inside a conflicting project is skipped, not half-done.
    assert conflicts["instance work/work-dev"].startswith("skipped: needs")
    assert list(p) == []


def test_vm_on_a_host_without_vm_support_is_a_clear_conflict(infra):
    i = edit_machine(infra, "perso-box", type=InstanceType.VM)
    obs = observed("fresh")
    p = plan(want(i), obs)
    conflicts = {n.label: n.reason for n in p.conflicts}
    assert "no /dev/vhost-vsock" in conflicts["instance perso/perso-box"]
    assert ("create", "instance work/work-dev") in ops(p)  # the others still go ahead
    p2 = plan(want(i), replace(obs, vm_unsupported=None))
    vm = next(a for a in p2 if a.label == "instance perso/perso-box")
    assert vm.desired.instance_type == "virtual-machine"


def test_type_change_is_refused(infra):
    i = edit_machine(infra, "perso-box", type=InstanceType.VM)
    p = plan(want(i), observed("default-applied"))
    assert "delete it to have it recreated" in p.conflicts[0].reason


def test_firewall_is_planned_from_desired_and_observed_tables(infra):
    d = want(infra)
    p = plan(d, with_table(observed("default-applied")))
    fw = next(a for a in p if a.kind is Kind.FIREWALL)
    assert fw.label == "firewall inet anklume" and fw.firewall == d.firewall
    assert fw.changes[0].new == "table inet anklume" and all(c.old is None for c in fw.changes)
    # A rule edited by hand is put back; the plan names it.
    extra = replace(d.firewall.rules[0], text="iifname x accept", expr="{}")
    live = replace(d.firewall, rules=(*d.firewall.rules, extra))
    fw = next(iter(plan(d, with_table(observed("default-applied"), live))))
    assert [(c.old, c.new) for c in fw.changes] == [("forward: iifname x accept", None)]
    # Not read (reconcile firewall=False) or not declared: left alone.
    assert not [a for a in plan(d, observed("default-applied")) if a.kind is Kind.FIREWALL]
    assert not plan(replace(d, firewall=None), with_table(observed("default-applied")))


def test_firewall_change_renders_as_rule_lines(infra):
    from anklume.agent.plan_text import format_action

    d = want(infra)
    live = replace(d.firewall, rules=d.firewall.rules[1:])
    fw = next(iter(plan(d, with_table(observed("default-applied"), live))))
    assert format_action(fw) == [
        "~ firewall inet anklume",
        '    + forward: ct state established,related accept comment "anklume: replies to '
        'allowed connections"']
