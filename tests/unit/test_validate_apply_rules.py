"""Issue #6: what validation accepted but apply did not do is now applied or rejected."""

from __future__ import annotations

import hashlib

import pytest
from test_validate import doc, errors, ok, where, write
from typer.testing import CliRunner

from anklume.agent import apply, values
from anklume.agent.model import bridge_name
from anklume.agent.nftables import render
from anklume.cli import app


def test_long_domain_name_gets_a_derived_bridge_that_fits(tmp_path):
    data = doc()
    data["domains"]["corp-sandbox"] = {"trust_level": "admin", "machines": {"sb-1": {}}}
    infra, _ = ok(tmp_path, data)
    br = infra.domain("corp-sandbox").bridge
    assert br == "net-corp-s-" + hashlib.sha256(b"corp-sandbox").hexdigest()[:4]
    assert len(br) == 15
    assert infra.domain("pro").bridge == "net-pro"  # short names keep net-<name>


def test_bridge_name_is_plain_up_to_eleven_characters():
    assert bridge_name("abcdefghijk") == "net-abcdefghijk"
    assert len(bridge_name("a" * 63)) == 15


def test_colliding_derived_bridge_names_are_an_error(tmp_path):
    # A real sha256 collision on 4 hex digits needs a search; one domain's plain name equal to
    # another's derived name is the same rule and easy to build.
    long = "corp-sandbox"
    data = doc()
    data["domains"][long] = {"trust_level": "admin"}
    # "corp-s-xxxx": its plain bridge net-corp-s-xxxx is corp-sandbox's derived one
    data["domains"][bridge_name(long)[4:]] = {"trust_level": "untrusted"}
    problems = errors(tmp_path, data)
    assert where(problems) == [f"domains.{long}"]
    assert "bridge" in problems[0].what and problems[0].line


@pytest.mark.parametrize("devices", [
    {"eth0": {"type": "nic", "network": "net-pro"}},
    {"lan": {"type": "nic", "name": "eth0", "network": "net-perso"}},
])
def test_user_eth0_is_an_error_on_machines_and_profiles(tmp_path, devices):
    data = doc()
    data["domains"]["perso"]["machines"]["perso-box"]["devices"] = devices
    dev = next(iter(devices))
    assert where(errors(tmp_path, data)) == [f"domains.perso.machines.perso-box.devices.{dev}"]
    data = doc()
    data["domains"]["perso"]["profiles"] = {"p": {"devices": devices}}
    problems = errors(tmp_path, data)
    assert where(problems) == [f"domains.perso.profiles.p.devices.{dev}"]
    assert "eth0" in problems[0].what and problems[0].file and problems[0].line


def test_nic_on_another_domains_bridge_is_an_error(tmp_path):
    data = doc()
    data["domains"]["perso"]["machines"]["perso-box"]["devices"] = {
        "eth1": {"type": "nic", "network": "net-pro"}}
    problems = errors(tmp_path, data)
    assert where(problems) == ["domains.perso.machines.perso-box.devices.eth1"]
    assert "net-pro" in problems[0].what and "isolation" in problems[0].what
    data = doc()
    data["domains"]["perso"]["profiles"] = {"p": {"devices": {
        "eth1": {"type": "nic", "nictype": "bridged", "parent": "net-pro"}}}}
    assert where(errors(tmp_path, data)) == ["domains.perso.profiles.p.devices.eth1"]


def test_nic_on_own_bridge_is_fine(tmp_path):
    data = doc()
    data["domains"]["perso"]["machines"]["perso-box"]["devices"] = {
        "eth1": {"type": "nic", "network": "net-perso"}}
    ok(tmp_path, data)


@pytest.mark.parametrize("image", ["ubuntu:24.04", "https:foo"])
def test_unsupported_image_remote_is_an_error(tmp_path, image):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["os_image"] = image
    data["global"]["default_os_image"] = image
    problems = errors(tmp_path, data)
    assert sorted(where(problems)) == ["domains.pro.machines.pro-dev.os_image",
                                       "global.default_os_image"]
    assert all('"images:"' in p.hint and '"local:"' in p.hint for p in problems)


@pytest.mark.parametrize("image", ["images:debian/13", "local:mine", "debian/13",
                                   "f9adf67aa20b"])
def test_supported_images(tmp_path, image):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["os_image"] = image
    ok(tmp_path, data)


def test_validation_remotes_are_those_apply_knows():
    assert set(values.IMAGE_REMOTES) == {*apply._REMOTES, "local"}


# Each checked against `incus config set <instance> snapshots.schedule=...` on Incus 6.0.
@pytest.mark.parametrize("sched", ["0 2 * * *", "@daily", "@DAILY", "*/15 * * * *",
                                   "0 0 1 jan mon", "@daily, 0 3 * * *", "1/5 * * * *",
                                   "1,2,3 1-5/2 ? * SUN-SAT", "@startup", "@never"])
def test_cron_schedules_incus_accepts(tmp_path, sched):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["snapshots_schedule"] = sched
    ok(tmp_path, data)


@pytest.mark.parametrize("sched", ["0 0 * * 7", "60 * * * *", "0 2 * *", "0  2 * * *",
                                   "0 2 * * *,@hourly", "5-1 * * * *", "*/0 * * * *",
                                   "@every 1h", "x * * * *", "0 0 0 * *", "0 24 * * *",
                                   "0 0 * 13 *"])
def test_cron_schedules_incus_rejects(tmp_path, sched):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["snapshots_schedule"] = sched
    assert where(errors(tmp_path, data)) == ["domains.pro.machines.pro-dev.snapshots_schedule"]


def test_firewall_mode_vm_warns_at_validate_time(tmp_path):
    data = doc()
    data["global"]["firewall_mode"] = "vm"
    _, warnings = ok(tmp_path, data)
    assert where(warnings) == ["global.firewall_mode"]
    assert "not supported" in warnings[0].what and warnings[0].line


def test_cli_validate_prints_the_firewall_mode_warning(tmp_path):
    data = doc()
    data["global"]["firewall_mode"] = "vm"
    path = write(tmp_path, data)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"warning: {path}:" in result.output
    assert "global.firewall_mode: vm (a firewall VM) is not supported yet" in result.output


def test_propagate_warns_for_vm_consumers(tmp_path):
    data = doc()
    data["domains"]["pro"]["machines"]["pro-dev"]["type"] = "vm"
    data["shared_volumes"] = {"docs": {"propagate": True, "consumers": {"pro": "rw"}}}
    infra, warnings = ok(tmp_path, data)
    assert [(w.where, "pro-dev" in w.what) for w in warnings] == [
        ("shared_volumes.docs.propagate", True)]
    mounts = next(m for m in infra.domain("pro").machines if m.name == "pro-web").shared_volumes
    assert mounts[0].propagate


def test_firewall_rules_use_the_derived_bridge(tmp_path):
    data = doc()
    data["domains"]["corp-sandbox"] = {"trust_level": "admin", "machines": {"sb-1": {}}}
    data["network_policies"] = [{"from": "corp-sandbox", "to": "pro", "ports": [22]}]
    infra, _ = ok(tmp_path, data)
    script = render(infra)
    br = bridge_name("corp-sandbox")
    assert f'"{br}"' in script and '"net-corp-sandbox"' not in script
