"""One test (or a few) per rule of infra.yml: write a config into tmp_path, check the result."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from anklume.agent.model import InstanceType, TrustLevel
from anklume.agent.validate import Problem, ValidationError, load, load_with_warnings
from anklume.errors import PermanentError

BASE = {
    "project_name": "t",
    "global": {},
    "domains": {
        "pro": {"trust_level": "trusted", "machines": {"pro-dev": {}, "pro-web": {}}},
        "perso": {"machines": {"perso-box": {"ip": "10.120.0.10"}}},
    },
}


def doc(**changes: object) -> dict:
    d = copy.deepcopy(BASE)
    d.update(changes)
    return d


def write(tmp_path: Path, data: object, name: str = "infra.yml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return p


def ok(tmp_path: Path, data: object):
    return load_with_warnings(write(tmp_path, data))


def errors(tmp_path: Path, data: object) -> list[Problem]:
    with pytest.raises(ValidationError) as e:
        load_with_warnings(write(tmp_path, data))
    return e.value.problems


def where(problems: list[Problem]) -> list[str]:
    return [p.where for p in problems]


def machine(infra, name):
    return next(m for d in infra.domains for m in d.machines if m.name == name)


# -- the embedded default -------------------------------------------------------------------

def test_default_infra_validates():
    infra, warnings = load_with_warnings(None)
    assert warnings == []
    assert [d.name for d in infra.domains] == ["admin", "perso", "work"]
    assert str(infra.domain("admin").subnet) == "10.100.0.0/24"
    assert str(infra.domain("work").subnet) == "10.110.0.0/24"
    assert str(infra.domain("perso").subnet) == "10.120.0.0/24"
    assert str(machine(infra, "admin-ctl").ip) == "10.100.0.10"
    assert [str(m.ip) for m in infra.domain("work").machines] == ["10.110.0.1", "10.110.0.2"]
    assert infra.settings.default_os_image == "images:debian/13"
    assert machine(infra, "work-dev").os_image == "images:debian/13"
    assert load(None) == infra


def test_error_is_permanent_with_exit_code_2(tmp_path):
    with pytest.raises(PermanentError) as e:
        load(write(tmp_path, {"project_name": "t"}))
    assert e.value.exit_code == 2


# -- errors: all at once, with file, line and key path ---------------------------------------

def test_all_problems_reported_at_once_with_location(tmp_path):
    data = doc()
    data["global"] = {"gpu_polcy": "shared"}
    data["domains"]["pro"]["machines"]["pro-dev"]["ip"] = "10.110.0.200"
    data["network_policies"] = [{"from": "pro", "to": "nowhere", "ports": [0]}]
    with pytest.raises(ValidationError) as e:
        load(write(tmp_path, data))
    got = where(e.value.problems)
    assert got == ["global.gpu_polcy", "domains.pro.machines.pro-dev.ip",
                   "network_policies[0].to", "network_policies[0].ports[0]"]
    text = str(e.value)
    for p in e.value.problems:
        assert p.file == str(tmp_path / "infra.yml") and p.line
        assert p.where in text
    assert 'did you mean "gpu_policy"?' in text
    assert "4 problems" in text


def test_line_numbers_point_at_the_key(tmp_path):
    text = "project_name: t\nglobal: {}\ndomains:\n  pro:\n    machines:\n      a:\n" \
           "        ip: 10.0.0.1\n"
    (p,) = errors(tmp_path, text)
    assert (p.where, p.line) == ("domains.pro.machines.a.ip", 7)


# -- top level and schema --------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["project_name", "global", "domains"])
def test_required_top_keys(tmp_path, missing):
    data = doc()
    del data[missing]
    assert where(errors(tmp_path, data)) == [missing]


@pytest.mark.parametrize("path, key, suggestion", [
    ((), "network_policy", "network_policies"),
    (("global",), "default_os_imag", "default_os_image"),
    (("domains", "pro"), "trust", "trust_level"),
    (("domains", "pro", "machines", "pro-dev"), "ephemral", "ephemeral"),
])
def test_unknown_key_suggests_closest(tmp_path, path, key, suggestion):
    data = doc()
    node = data
    for k in path:
        node = node[k]
    node[key] = True
    (p,) = errors(tmp_path, data)
    assert p.where == ".".join([*path, key])
    assert p.hint == f'did you mean "{suggestion}"?'


def test_unknown_key_in_policy(tmp_path):
    data = doc(network_policies=[{"from": "pro", "to": "perso", "port": [22]}])
    (p,) = errors(tmp_path, data)
    assert p.where == "network_policies[0].port" and "ports" in p.hint


def test_legacy_keys_warn_by_name(tmp_path):
    data = doc()
    data["global"].update(default_connection="community.general.incus", default_user="root",
                          resource_policy={"mode": "equal"})
    data["global"]["addressing"] = {"zone_step": 10}
    data["domains"]["pro"]["ai_provider"] = "local"
    data["domains"]["pro"]["machines"]["pro-dev"].update(roles=["base"], weight=2)
    _, warnings = ok(tmp_path, data)
    named = {p.where for p in warnings}
    assert named == {"global.default_connection", "global.default_user",
                     "global.resource_policy", "global.addressing.zone_step",
                     "domains.pro.ai_provider", "domains.pro.machines.pro-dev.roles",
                     "domains.pro.machines.pro-dev.weight"}
    assert all("no effect" in p.what for p in warnings)


@pytest.mark.parametrize("data, path", [
    ([1, 2], ""),
    ("just text", ""),
    ({"project_name": "t", "global": [], "domains": {}}, "global"),
    ({"project_name": "t", "global": {}, "domains": ["pro"]}, "domains"),
    ({"project_name": "t", "global": {}, "domains": {"pro": "x"}}, "domains.pro"),
    ({"project_name": "t", "global": {}, "domains": {"pro": {"machines": []}}},
     "domains.pro.machines"),
    ({"project_name": "t", "global": {}, "domains": {}, "network_policies": {}},
     "network_policies"),
    ({"project_name": "t", "global": {}, "domains": {}, "network_policies": ["x"]},
     "network_policies[0]"),
])
def test_wrong_shapes_are_errors_at_their_path(tmp_path, data, path):
    assert path in where(errors(tmp_path, data))


def test_empty_document(tmp_path):
    (p,) = errors(tmp_path, "# nothing\n")
    assert "empty" in p.what


def test_newer_schema_version_refused(tmp_path):
    assert where(errors(tmp_path, doc(schema_version=2))) == ["schema_version"]


def test_wrong_types(tmp_path):
    data = doc()
    data["domains"]["pro"]["enabled"] = "yes"
    data["domains"]["pro"]["machines"]["pro-dev"]["boot_priority"] = True
    data["domains"]["pro"]["machines"]["pro-dev"]["gpu"] = 1
    assert where(errors(tmp_path, data)) == [
        "domains.pro.enabled", "domains.pro.machines.pro-dev.boot_priority",
        "domains.pro.machines.pro-dev.gpu"]


def test_null_values_mean_defaults(tmp_path):
    infra, _ = ok(tmp_path, "project_name: t\nglobal: {}\ndomains:\n  pro:\n    machines:\n"
                  "    description:\n")
    assert infra.domain("pro").machines == () and infra.domain("pro").description == ""
    assert where(errors(tmp_path, "project_name:\nglobal: {}\ndomains: {}\n")) == \
        ["project_name"]


# -- global -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("gpu_policy", "sometimes"), ("firewall_mode", "router"),
    ("shared_volumes_base", "srv/x"), ("persistent_data_base", "/srv/../etc"),
    ("default_os_image", "debian 13"), ("allow_privileged", "yes"),
])
def test_global_values(tmp_path, key, value):
    data = doc()
    data["global"][key] = value
    assert where(errors(tmp_path, data)) == [f"global.{key}"]


@pytest.mark.parametrize("key, value", [("base_octet", 192), ("zone_base", 206),
                                        ("zone_base", -1), ("zone_base", "100")])
def test_addressing_values(tmp_path, key, value):
    data = doc()
    data["global"]["addressing"] = {key: value}
    assert where(errors(tmp_path, data)) == [f"global.addressing.{key}"]


def test_zone_base_moves_every_zone(tmp_path):
    data = doc()
    data["global"]["addressing"] = {"zone_base": 205}
    data["domains"]["perso"]["machines"] = {}
    infra, _ = ok(tmp_path, data)
    assert str(infra.domain("pro").subnet) == "10.215.0.0/24"
    assert str(infra.domain("perso").subnet) == "10.225.0.0/24"


def test_image_with_remote_and_fingerprint(tmp_path):
    data = doc()
    data["global"]["default_os_image"] = "images:alpine/3.20/cloud"
    data["domains"]["pro"]["machines"]["pro-dev"]["os_image"] = "a1b2c3d4e5f6"
    infra, _ = ok(tmp_path, data)
    assert machine(infra, "pro-dev").os_image == "a1b2c3d4e5f6"
    assert machine(infra, "pro-web").os_image == "images:alpine/3.20/cloud"


# -- domains ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Pro", "-pro", "pro-", "pro_x", "a" * 64, "host"])
def test_bad_domain_names(tmp_path, name):
    data = doc()
    data["domains"][name] = {}
    assert where(errors(tmp_path, data)) == [f"domains.{name}"]


def test_eleven_character_domain_name_is_fine(tmp_path):
    data = doc()
    data["domains"]["abcdefghijk"] = {"trust_level": "admin"}
    infra, _ = ok(tmp_path, data)
    assert infra.domain("abcdefghijk").bridge == "net-abcdefghijk"


def test_domain_defaults(tmp_path):
    infra, _ = ok(tmp_path, doc())
    perso = infra.domain("perso")
    assert (perso.enabled, perso.trust_level, perso.ephemeral, perso.description) == \
        (True, TrustLevel.SEMI_TRUSTED, False, "")
    assert str(perso.gateway) == "10.120.0.254" and perso.bridge == "net-perso"


def test_unknown_trust_level(tmp_path):
    data = doc()
    data["domains"]["pro"]["trust_level"] = "trustd"
    (p,) = errors(tmp_path, data)
    assert p.where == "domains.pro.trust_level" and '"trusted"' in p.hint


def test_seq_alphabetical_in_zone_skipping_explicit_ids(tmp_path):
    data = doc(domains={
        "zeta": {"trust_level": "untrusted"},
        "beta": {"trust_level": "untrusted"},
        "alpha": {"trust_level": "untrusted", "subnet_id": 1},
        "gamma": {"trust_level": "untrusted", "enabled": False},
        "admin": {"trust_level": "admin"},
    })
    infra, _ = ok(tmp_path, data)
    seqs = {d.name: d.seq for d in infra.domains}
    assert seqs == {"alpha": 1, "beta": 0, "gamma": 2, "zeta": 3, "admin": 0}
    assert str(infra.domain("zeta").subnet) == "10.140.3.0/24"
    assert [d.name for d in infra.enabled_domains] == ["admin", "alpha", "beta", "zeta"]


def test_disabled_domain_keeps_its_seq(tmp_path):
    data = doc(domains={"a": {}, "b": {}, "c": {}})
    first, _ = ok(tmp_path, data)
    data["domains"]["b"]["enabled"] = False
    second, _ = ok(tmp_path, data)
    assert [d.subnet for d in first.domains] == [d.subnet for d in second.domains]


def test_duplicate_subnet_in_a_zone(tmp_path):
    data = doc(domains={"a": {"subnet_id": 3}, "b": {"subnet_id": 3},
                        "c": {"subnet_id": 3, "trust_level": "admin"}})
    (p,) = errors(tmp_path, data)
    assert p.where == "domains.b.subnet_id" and '"a"' in p.what


def test_subnet_id_range(tmp_path):
    data = doc(domains={"a": {"subnet_id": 255}})
    assert where(errors(tmp_path, data)) == ["domains.a.subnet_id"]


def test_legacy_base_subnet(tmp_path):
    data = doc(domains={"a": {"subnet_id": 0, "machines": {"m": {"ip": "10.100.0.10"}}},
                        "b": {"subnet_id": 7, "trust_level": "disposable"}})
    data["global"] = {"base_subnet": "10.100"}
    infra, _ = ok(tmp_path, data)
    assert str(infra.domain("a").subnet) == "10.100.0.0/24"
    assert str(infra.domain("b").subnet) == "10.100.7.0/24"


def test_legacy_base_subnet_needs_subnet_ids(tmp_path):
    data = doc(domains={"a": {"subnet_id": 0}, "b": {}, "c": {"subnet_id": 0}})
    data["global"] = {"base_subnet": "10.100"}
    assert where(errors(tmp_path, data)) == ["domains.b.subnet_id", "domains.c.subnet_id"]


@pytest.mark.parametrize("glob", [{"base_subnet": "10"}, {"base_subnet": "10.300"},
                                  {"base_subnet": "10.100", "addressing": {}}])
def test_legacy_base_subnet_errors(tmp_path, glob):
    data = doc(domains={"a": {"subnet_id": 0}})
    data["global"] = glob
    assert where(errors(tmp_path, data)) == ["global.base_subnet"]


def test_profiles(tmp_path):
    data = doc()
    data["domains"]["pro"]["profiles"] = {"nesting": {"config": {"security.nesting": True}}}
    data["domains"]["pro"]["machines"]["pro-dev"]["profiles"] = ["default", "nesting"]
    data["domains"]["pro"]["machines"]["pro-dev"]["unsafe"] = ["security.nesting"]
    infra, _ = ok(tmp_path, data)
    (prof,) = infra.domain("pro").profiles
    assert prof.name == "nesting" and dict(prof.config) == {"security.nesting": "true"}
    assert machine(infra, "pro-dev").profiles == ("default", "nesting")
    assert machine(infra, "pro-web").profiles == ("default",)


def test_unknown_profile_reference(tmp_path):
    data = doc()
    data["domains"]["pro"]["profiles"] = {"nesting": {}}
    data["domains"]["pro"]["machines"]["pro-dev"]["profiles"] = ["default", "nestin"]
    (p,) = errors(tmp_path, data)
    assert p.where == "domains.pro.machines.pro-dev.profiles[1]" and '"nesting"' in p.hint


def test_profile_named_default_refused(tmp_path):
    data = doc()
    data["domains"]["pro"]["profiles"] = {"default": {}}
    assert where(errors(tmp_path, data)) == ["domains.pro.profiles.default"]


# -- machines ---------------------------------------------------------------------------------

def test_machine_defaults_and_inheritance(tmp_path):
    data = doc()
    data["domains"]["pro"]["ephemeral"] = True
    data["domains"]["pro"]["machines"]["pro-web"] = {"ephemeral": False, "type": "vm"}
    infra, _ = ok(tmp_path, data)
    dev, web = machine(infra, "pro-dev"), machine(infra, "pro-web")
    assert (dev.ephemeral, dev.type, dev.os_image, dev.gpu) == \
        (True, InstanceType.LXC, "debian/13", False)
    assert (web.ephemeral, web.type) == (False, InstanceType.VM)


def test_machine_name_unique_across_domains(tmp_path):
    data = doc()
    data["domains"]["perso"]["machines"]["pro-dev"] = {}
    (p,) = errors(tmp_path, data)
    assert p.where == "domains.perso.machines.pro-dev" and '"pro"' in p.what


@pytest.mark.parametrize("name", ["Dev", "dev_1", "x" * 64, "host"])
def test_bad_machine_names(tmp_path, name):
    data = doc()
    data["domains"]["pro"]["machines"][name] = {}
    assert where(errors(tmp_path, data)) == [f"domains.pro.machines.{name}"]


def test_unknown_machine_type(tmp_path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["type"] = "docker"
    assert where(errors(tmp_path, data)) == ["domains.pro.machines.pro-dev.type"]


def test_boot_and_snapshots(tmp_path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"].update(
        boot_autostart=True, boot_priority=100, snapshots_schedule="0 2 * * *",
        snapshots_expiry="30d")
    data["domains"]["pro"]["machines"]["pro-web"].update(snapshots_schedule="@daily")
    infra, _ = ok(tmp_path, data)
    m = machine(infra, "pro-dev")
    assert (m.boot_autostart, m.boot_priority, m.snapshots_schedule, m.snapshots_expiry) == \
        (True, 100, "0 2 * * *", "30d")
    assert machine(infra, "pro-web").boot_priority is None


@pytest.mark.parametrize("key, value", [
    ("boot_priority", 101), ("boot_priority", -1), ("snapshots_schedule", "0 2 * *"),
    ("snapshots_schedule", "every day"), ("snapshots_expiry", "30"),
    ("snapshots_expiry", "1w"), ("boot_autostart", "true"),
])
def test_boot_and_snapshot_errors(tmp_path, key, value):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"][key] = value
    assert where(errors(tmp_path, data)) == [f"domains.pro.machines.pro-dev.{key}"]


def test_config_and_devices_become_strings(tmp_path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"].update(
        config={"limits.cpu": 2, "security.nesting": True, "limits.memory": "2GiB"},
        devices={"data": {"type": "disk", "source": "/srv/x", "path": "/x", "readonly": True}},
        unsafe=["security.nesting", "host-path"])
    infra, _ = ok(tmp_path, data)
    m = machine(infra, "pro-dev")
    assert dict(m.config) == {"limits.cpu": "2", "security.nesting": "true",
                              "limits.memory": "2GiB"}
    assert dict(m.devices["data"]) == {"type": "disk", "source": "/srv/x", "path": "/x",
                                       "readonly": "true"}


def test_nested_config_value_refused(tmp_path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["config"] = {"limits": {"cpu": 2}}
    assert where(errors(tmp_path, data)) == ["domains.pro.machines.pro-dev.config.limits"]


# -- IP addressing ----------------------------------------------------------------------------

def test_auto_ips_in_declaration_order_skipping_explicit(tmp_path):
    data = doc(domains={"pro": {"machines": {
        "c": {}, "a": {"ip": "10.120.0.1"}, "b": {}, "d": {"ip": "10.120.0.3"}, "e": {}}}})
    infra, _ = ok(tmp_path, data)
    ips = {m.name: str(m.ip) for m in infra.domain("pro").machines}
    assert ips == {"c": "10.120.0.2", "a": "10.120.0.1", "b": "10.120.0.4",
                   "d": "10.120.0.3", "e": "10.120.0.5"}
    assert [m.name for m in infra.domain("pro").machines] == ["c", "a", "b", "d", "e"]


@pytest.mark.parametrize("ip, what", [
    ("10.120.0", "not a valid IPv4"), ("10.120.0.10/24", "not a valid IPv4"),
    ("10.120.0.010", "not a valid IPv4"), ("10.121.0.10", "outside the subnet"),
    ("10.120.0.100", "static range"), ("10.120.0.254", "static range"),
    ("10.120.0.0", "static range"),
])
def test_ip_errors(tmp_path, ip, what):
    data = doc()
    data["domains"]["perso"]["machines"]["perso-box"]["ip"] = ip
    (p,) = errors(tmp_path, data)
    assert p.where == "domains.perso.machines.perso-box.ip" and what in p.what


def test_ip_used_twice(tmp_path):
    data = doc()
    data["domains"]["perso"]["machines"]["perso-2"] = {"ip": "10.120.0.10"}
    (p,) = errors(tmp_path, data)
    assert p.where == "domains.perso.machines.perso-2.ip" and '"perso-box"' in p.what


def test_running_out_of_static_addresses(tmp_path):
    data = doc(domains={"big": {"machines": {f"m{i}": {} for i in range(100)}}})
    (p,) = errors(tmp_path, data)
    assert p.where == "domains.big.machines" and '"big"' in p.what
    data["domains"]["big"]["machines"].pop("m99")
    infra, _ = ok(tmp_path, data)
    assert str(infra.domain("big").machines[-1].ip) == "10.120.0.99"


# -- GPU --------------------------------------------------------------------------------------

def test_gpu_exclusive(tmp_path):
    data = doc()
    data["domains"]["pro"]["profiles"] = {"gpu": {"devices": {"gpu": {"type": "gpu"}}}}
    data["domains"]["pro"]["machines"]["pro-dev"]["profiles"] = ["default", "gpu"]
    data["domains"]["perso"]["machines"]["perso-box"]["gpu"] = True
    assert where(errors(tmp_path, data)) == ["domains.pro.machines.pro-dev.gpu"]
    data["global"]["gpu_policy"] = "shared"
    _, warnings = ok(tmp_path, data)
    assert where(warnings) == ["global.gpu_policy"]


def test_gpu_in_disabled_domain_does_not_count(tmp_path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["gpu"] = True
    data["domains"]["perso"]["machines"]["perso-box"]["gpu"] = True
    data["domains"]["perso"]["enabled"] = False
    infra, _ = ok(tmp_path, data)
    assert machine(infra, "perso-box").gpu


# -- privileged -------------------------------------------------------------------------------

def test_privileged_lxc_refused_unless_opted_in(tmp_path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["config"] = {"security.privileged": "true"}
    (p,) = errors(tmp_path, data)
    assert p.where == "domains.pro.machines.pro-dev.config.security.privileged"
    assert "allow_privileged" in p.hint
    data["global"]["allow_privileged"] = True
    infra, _ = ok(tmp_path, data)
    assert infra.settings.allow_privileged


def test_privileged_vm_and_false_are_fine(tmp_path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"].update(
        type="vm", config={"security.privileged": True})
    data["domains"]["pro"]["machines"]["pro-web"]["config"] = {"security.privileged": False}
    ok(tmp_path, data)


def test_privileged_through_a_profile(tmp_path):
    data = doc()
    data["domains"]["pro"]["profiles"] = {"priv": {"config": {"security.privileged": True}}}
    data["domains"]["pro"]["machines"]["pro-dev"]["profiles"] = ["default", "priv"]
    assert where(errors(tmp_path, data)) == ["domains.pro.machines.pro-dev.profiles"]


# -- network policies -------------------------------------------------------------------------

def test_policies_resolve_endpoints(tmp_path):
    data = doc(network_policies=[
        {"description": "dev to box", "from": "pro-dev", "to": "perso-box", "ports": [22, 22]},
        {"from": "host", "to": "pro", "protocol": "udp", "bidirectional": True},
    ])
    infra, _ = ok(tmp_path, data)
    first, second = infra.policies
    assert (first.source.kind, first.source.domain, str(first.source.ip)) == \
        ("machine", "pro", "10.110.0.1")
    assert (first.target.kind, str(first.target.ip)) == ("machine", "10.120.0.10")
    assert first.ports == (22,) and first.protocol == "tcp" and not first.bidirectional
    assert (second.source.kind, second.target.kind, second.target.domain) == \
        ("host", "domain", "pro")
    assert second.ports is None and second.protocol == "udp" and second.bidirectional


@pytest.mark.parametrize("policy, path", [
    ({"from": "pro", "to": "pero"}, "network_policies[0].to"),
    ({"from": 3, "to": "pro"}, "network_policies[0].from"),
    ({"to": "pro"}, "network_policies[0].from"),
    ({"from": "pro", "to": "perso", "ports": [0]}, "network_policies[0].ports[0]"),
    ({"from": "pro", "to": "perso", "ports": [65536]}, "network_policies[0].ports[0]"),
    ({"from": "pro", "to": "perso", "ports": [True]}, "network_policies[0].ports[0]"),
    ({"from": "pro", "to": "perso", "ports": ["80"]}, "network_policies[0].ports[0]"),
    ({"from": "pro", "to": "perso", "ports": []}, "network_policies[0].ports"),
    ({"from": "pro", "to": "perso", "ports": 80}, "network_policies[0].ports"),
    ({"from": "pro", "to": "perso", "protocol": "icmp"}, "network_policies[0].protocol"),
    ({"from": "pro", "to": "perso", "bidirectional": "yes"},
     "network_policies[0].bidirectional"),
])
def test_policy_errors(tmp_path, policy, path):
    assert where(errors(tmp_path, doc(network_policies=[policy]))) == [path]


def test_a_policy_from_the_lan_names_its_ports_and_a_domain_or_machine(tmp_path):
    infra, _ = ok(tmp_path, doc(network_policies=[
        {"from": "lan", "to": "perso-box", "ports": [443]}]))
    (p,) = infra.policies
    assert (p.source.kind, p.target.kind, p.ports) == ("lan", "machine", (443,))


@pytest.mark.parametrize("policy, path", [
    ({"from": "lan", "to": "pro"}, "network_policies[0].ports"),  # all ports
    ({"from": "lan", "to": "host", "ports": [22]}, "network_policies[0].to"),
    ({"from": "lan", "to": "pro", "ports": [22], "bidirectional": True},
     "network_policies[0].bidirectional"),
    ({"from": "pro", "to": "lan", "ports": [22]}, "network_policies[0].to"),
])
def test_lan_is_only_a_from_with_named_ports(tmp_path, policy, path):
    assert where(errors(tmp_path, doc(network_policies=[policy]))) == [path]


@pytest.mark.parametrize("name", ["host", "lan"])
def test_policy_keywords_are_reserved_names(tmp_path, name):
    data = doc()
    data["domains"][name] = {}
    (p,) = errors(tmp_path, data)
    assert p.where == f"domains.{name}" and "is reserved" in p.what


def test_unknown_policy_reference_suggests(tmp_path):
    (p,) = errors(tmp_path, doc(network_policies=[{"from": "pro-dv", "to": "pro"}]))
    assert p.hint == 'did you mean "pro-dev"?'


def test_policy_on_disabled_domain_warns_and_is_left_out(tmp_path):
    data = doc(network_policies=[{"from": "pro", "to": "perso-box"},
                                 {"from": "host", "to": "pro"}])
    data["domains"]["perso"]["enabled"] = False
    infra, warnings = ok(tmp_path, data)
    assert where(warnings) == ["network_policies[0]"] and '"perso"' in warnings[0].what
    assert [p.target.name for p in infra.policies] == ["pro"]


def test_name_both_domain_and_machine_is_ambiguous_in_policies(tmp_path):
    data = doc()
    data["domains"]["perso"]["machines"]["pro"] = {}
    ok(tmp_path, data)
    data["network_policies"] = [{"from": "host", "to": "pro"}]
    assert where(errors(tmp_path, data)) == ["network_policies[0].to"]


# -- shared volumes and persistent data -------------------------------------------------------

def test_shared_volumes_resolved_per_machine(tmp_path):
    data = doc(shared_volumes={
        "docs": {"consumers": {"pro": "ro", "pro-dev": "rw"}, "shift": True},
        "media": {"source": "/data/shares/media/films", "path": "/media",
                  "consumers": {"perso-box": "ro"},
                  "propagate": True},
    })
    data["global"]["shared_volumes_base"] = "/data/shares/"
    infra, _ = ok(tmp_path, data)
    (dev,) = machine(infra, "pro-dev").shared_volumes
    assert (dev.volume, dev.source, dev.path, dev.readonly, dev.shift) == \
        ("docs", "/data/shares/docs", "/shared/docs", False, True)
    (web,) = machine(infra, "pro-web").shared_volumes
    assert web.readonly
    (box,) = machine(infra, "perso-box").shared_volumes
    assert (box.source, box.path, box.readonly, box.propagate) == \
        ("/data/shares/media/films", "/media", True, True)


@pytest.mark.parametrize("vol, path", [
    ({"consumers": {"pro": "rx"}}, "shared_volumes.v.consumers.pro"),
    ({"consumers": {"pri": "ro"}}, "shared_volumes.v.consumers.pri"),
    ({"consumers": {"host": "ro"}}, "shared_volumes.v.consumers.host"),
    ({"source": "rel/dir", "consumers": {"pro": "ro"}}, "shared_volumes.v.source"),
    ({"path": "shared", "consumers": {"pro": "ro"}}, "shared_volumes.v.path"),
    ({"consumer": {}}, "shared_volumes.v.consumer"),
])
def test_shared_volume_errors(tmp_path, vol, path):
    assert where(errors(tmp_path, doc(shared_volumes={"v": vol}))) == [path]


def test_shared_volume_without_consumers_warns(tmp_path):
    _, warnings = ok(tmp_path, doc(shared_volumes={"v": {}}))
    assert where(warnings) == ["shared_volumes.v.consumers"]


def test_persistent_data(tmp_path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["persistent_data"] = {
        "home": {"path": "/home/user/"}, "db": {"path": "/var/lib/db", "readonly": True}}
    infra, _ = ok(tmp_path, data)
    vols = machine(infra, "pro-dev").persistent_data
    assert [(v.name, v.path, v.readonly) for v in vols] == \
        [("home", "/home/user", False), ("db", "/var/lib/db", True)]


@pytest.mark.parametrize("vol, path", [
    ({"path": "home"}, "domains.pro.machines.pro-dev.persistent_data.v.path"),
    ({}, "domains.pro.machines.pro-dev.persistent_data.v.path"),
    ({"path": "/x", "readonly": "no"}, "domains.pro.machines.pro-dev.persistent_data.v.readonly"),
    ("/x", "domains.pro.machines.pro-dev.persistent_data.v"),
])
def test_persistent_data_errors(tmp_path, vol, path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["persistent_data"] = {"v": vol}
    assert where(errors(tmp_path, data)) == [path]


def test_same_mount_path_twice_in_one_machine(tmp_path):
    data = doc(shared_volumes={"a": {"path": "/data", "consumers": {"pro": "rw"}},
                               "b": {"path": "/data/", "consumers": {"pro-dev": "ro"}}})
    assert where(errors(tmp_path, data)) == ["shared_volumes.b"]
    data = doc(shared_volumes={"a": {"path": "/data", "consumers": {"pro": "rw"}}})
    data["domains"]["pro"]["machines"]["pro-web"]["persistent_data"] = {"x": {"path": "/data"}}
    assert where(errors(tmp_path, data)) == ["shared_volumes.a"]
    data = doc()
    data["domains"]["pro"]["machines"]["pro-web"].update(
        persistent_data={"x": {"path": "/data"}},
        devices={"mine": {"type": "disk", "source": "/srv/anklume/data/mine", "path": "/data"}})
    assert where(errors(tmp_path, data)) == [
        "domains.pro.machines.pro-web.persistent_data.x"]


def test_generated_device_name_taken(tmp_path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-web"].update(
        persistent_data={"x": {"path": "/data"}},
        devices={"pd-x": {"type": "nic", "network": "net-pro"}})
    assert where(errors(tmp_path, data)) == [
        "domains.pro.machines.pro-web.persistent_data.x"]


def test_same_path_in_different_machines_is_fine(tmp_path):
    data = doc(shared_volumes={"a": {"path": "/data", "consumers": {"pro-dev": "rw"}}})
    data["domains"]["pro"]["machines"]["pro-web"]["persistent_data"] = {"x": {"path": "/data"}}
    ok(tmp_path, data)


def test_policy_to_itself_warns(tmp_path):
    _, warnings = ok(tmp_path, doc(network_policies=[{"from": "pro", "to": "pro"}]))
    assert where(warnings) == ["network_policies[0]"]


def test_problem_and_error_text():
    p = Problem("domains.pro.machines.a.ip", "bad", "fix it", "infra.yml", 7)
    assert str(p) == "infra.yml:7: domains.pro.machines.a.ip: bad (hint: fix it)"
    assert str(Problem("", "empty", file="x.yml")) == "x.yml: empty"
    e = ValidationError([p, Problem("global", "worse")])
    assert str(e).splitlines() == ["infra.yml is invalid (2 problems):",
                                   f"  - {p}", "  - global: worse"]


def test_privileged_as_incus_resolves_it(tmp_path):
    data = doc()
    data["domains"]["pro"]["profiles"] = {"priv": {"config": {"security.privileged": True}},
                                          "unpriv": {"config": {"security.privileged": False}}}
    machines = data["domains"]["pro"]["machines"]
    machines["pro-dev"].update(profiles=["default", "priv"],
                               config={"security.privileged": "false"})
    machines["pro-web"]["profiles"] = ["priv", "unpriv"]
    ok(tmp_path, data)
    machines["pro-web"]["profiles"] = ["unpriv", "priv"]
    assert where(errors(tmp_path, data)) == ["domains.pro.machines.pro-web.profiles"]
