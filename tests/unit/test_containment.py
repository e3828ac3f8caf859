"""infra.yml cannot hand a machine the host (issue #20, agent/containment.py): each way that
validated before is now an error naming the key and why, unless the machine opts in by name,
which every validation then repeats as a warning."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from anklume.agent.validate import ValidationError, load_with_warnings

BASE = {
    "project_name": "t",
    "global": {},
    "domains": {"pro": {"trust_level": "trusted", "machines": {"pro-dev": {}}}},
}
DEV = "domains.pro.machines.pro-dev"

# (what the machine gets, the capability it needs, where the error points)
HOLES = [
    ({"config": {"raw.lxc": "lxc.mount.entry = / host none bind 0 0"}}, "raw.lxc",
     f"{DEV}.config.raw.lxc"),
    ({"config": {"raw.idmap": "both 0 0"}}, "raw.idmap", f"{DEV}.config.raw.idmap"),
    ({"config": {"raw.apparmor": "mount,"}}, "raw.apparmor", f"{DEV}.config.raw.apparmor"),
    ({"config": {"security.nesting": True}}, "security.nesting",
     f"{DEV}.config.security.nesting"),
    ({"config": {"linux.kernel_modules": "nbd"}}, "linux.kernel_modules",
     f"{DEV}.config.linux.kernel_modules"),
    ({"config": {"security.syscalls.intercept.mount": True}},
     "security.syscalls.intercept.mount", f"{DEV}.config.security.syscalls.intercept.mount"),
    ({"devices": {"root2": {"type": "disk", "source": "/", "path": "/host"}}}, "host-path",
     f"{DEV}.devices.root2"),
    ({"devices": {"etc": {"type": "disk", "source": "/srv/anklume/data/../../../etc",
                          "path": "/e"}}}, "host-path", f"{DEV}.devices.etc"),
    ({"devices": {"mem": {"type": "unix-char", "path": "/dev/mem"}}}, "host-device",
     f"{DEV}.devices.mem"),
    ({"devices": {"sda": {"type": "unix-block", "source": "/dev/sda"}}}, "host-device",
     f"{DEV}.devices.sda"),
    ({"devices": {"lan": {"type": "nic", "nictype": "physical", "parent": "eth1"}}},
     "host-nic", f"{DEV}.devices.lan"),
    ({"devices": {"lan": {"type": "nic", "nictype": "macvlan", "parent": "eth0"}}},
     "host-nic", f"{DEV}.devices.lan"),
    ({"devices": {"api": {"type": "proxy", "listen": "tcp:0.0.0.0:8443",
                          "connect": "unix:/var/lib/incus/unix.socket"}}}, "proxy",
     f"{DEV}.devices.api"),
]


def load(tmp_path: Path, data: dict):
    p = tmp_path / "infra.yml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_with_warnings(p)


def with_machine(extra: dict) -> dict:
    d = copy.deepcopy(BASE)
    d["domains"]["pro"]["machines"]["pro-dev"] = copy.deepcopy(extra)
    return d


@pytest.mark.parametrize("extra, capability, where", HOLES)
def test_each_way_to_the_host_is_refused_and_says_why(tmp_path, extra, capability, where):
    with pytest.raises(ValidationError) as e:
        load(tmp_path, with_machine(extra))
    (p,) = e.value.problems
    assert p.where == where
    assert capability in p.what and "containment" in p.what
    assert f"unsafe: [{capability}]" in p.hint


@pytest.mark.parametrize("extra, capability, where", HOLES)
def test_an_opt_in_by_name_is_accepted_and_said_at_every_validation(tmp_path, extra,
                                                                    capability, where):
    _, warnings = load(tmp_path, with_machine({**extra, "unsafe": [capability]}))
    assert [w.where for w in warnings] == [where]
    assert f"opts in to unsafe {capability}" in warnings[0].what


def test_the_same_through_a_profile_points_at_the_profile(tmp_path):
    d = copy.deepcopy(BASE)
    d["domains"]["pro"]["profiles"] = {"n": {"config": {"security.nesting": True}}}
    d["domains"]["pro"]["machines"]["pro-dev"] = {"profiles": ["default", "n"]}
    with pytest.raises(ValidationError) as e:
        load(tmp_path, d)
    assert [p.where for p in e.value.problems] == ["domains.pro.profiles.n.config.security.nesting"]


def test_what_keeps_a_machine_contained_needs_no_opt_in(tmp_path):
    _, warnings = load(tmp_path, with_machine({
        "config": {"limits.cpu": 2, "limits.memory": "1GiB", "boot.stop.priority": 5,
                   "user.note": "x", "environment.LANG": "C.UTF-8",
                   "security.idmap.isolated": True, "linux.sysctl.net.ipv4.ping_group_range":
                   "0 0"},
        "devices": {
            "data": {"type": "disk", "source": "/srv/anklume/data/pro/x", "path": "/x"},
            "vol": {"type": "disk", "pool": "default", "source": "myvol", "path": "/v"},
            "nic1": {"type": "nic", "network": "net-pro"},
            "tpm": {"type": "tpm"}}}))
    assert warnings == []


def test_an_opt_in_nothing_uses_is_pointed_out(tmp_path):
    _, warnings = load(tmp_path, with_machine({"unsafe": ["raw.lxc"]}))
    assert [w.where for w in warnings] == [f"{DEV}.unsafe"]
    assert "not needed" in warnings[0].what


@pytest.mark.parametrize("volume, error", [
    ({"source": "/", "consumers": {"pro": "rw"}}, "shared_volumes.v.source"),
    ({"source": "/etc", "consumers": {"pro": "rw"}}, "shared_volumes.v.source"),
    ({"source": "/var/lib/incus", "consumers": {"pro": "ro"}}, "shared_volumes.v.source"),
])
def test_shared_volumes_stay_under_their_root(tmp_path, volume, error):
    d = copy.deepcopy(BASE)
    d["shared_volumes"] = {"v": volume}
    with pytest.raises(ValidationError) as e:
        load(tmp_path, d)
    assert [p.where for p in e.value.problems] == [error]
    assert "outside global.shared_volumes_base" in e.value.problems[0].what


@pytest.mark.parametrize("key", ["shared_volumes_base", "persistent_data_base"])
def test_a_data_root_cannot_be_the_whole_host(tmp_path, key):
    d = copy.deepcopy(BASE)
    d["global"] = {key: "/"}
    with pytest.raises(ValidationError) as e:
        load(tmp_path, d)
    assert [p.where for p in e.value.problems] == [f"global.{key}"]
