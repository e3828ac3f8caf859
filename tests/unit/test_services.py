"""services: validation of each rule (file:line and key path), the consumers' proxy devices and
the one firewall rule the host-side proxy needs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from anklume.agent.desired import desired
from anklume.agent.nft_rules import desired_rules
from anklume.agent.resources import Kind
from anklume.agent.validate import ValidationError, load_with_warnings

BASE = {
    "project_name": "t",
    "global": {},
    "domains": {
        "vault": {"trust_level": "admin", "machines": {
            "vault-sign": {"ip": "10.100.0.10"}, "vault-vm": {"type": "vm"}}},
        "work": {"trust_level": "trusted", "machines": {"work-dev": {}, "work-web": {}}},
        "perso": {"machines": {"perso-box": {}}},
        "old": {"enabled": False, "machines": {"old-box": {}}},
    },
}


def with_services(services: dict, machine: str = "vault-sign", domain: str = "vault") -> dict:
    d = copy.deepcopy(BASE)
    d["domains"][domain]["machines"][machine]["services"] = services
    return d


def load(tmp_path: Path, data: dict):
    p = tmp_path / "infra.yml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_with_warnings(p)[0]


def problems(tmp_path: Path, data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as e:
        load(tmp_path, data)
    for p in e.value.problems:
        assert p.file and p.line, p  # every error names file:line
    return [(p.where, p.what) for p in e.value.problems]


def test_grants_expand_domains_and_become_proxy_devices(tmp_path):
    infra = load(tmp_path, with_services({
        "signer": {"port": 7000, "consumers": ["work-dev", "perso"]},
        "clip": {"socket": "/run/clip.sock", "listen": "/run/c.sock", "consumers": ["work"]},
    }))
    got = sorted((g.service, g.consumer, g.listen) for g in infra.services)
    assert got == [("clip", "work-dev", "/run/c.sock"), ("clip", "work-web", "/run/c.sock"),
                   ("signer", "perso-box", "127.0.0.1:7000"),
                   ("signer", "work-dev", "127.0.0.1:7000")]
    state = desired(infra)
    dev = state.get((Kind.INSTANCE, "work", "work-dev")).devices
    assert dict(dev["svc-vault-sign-signer"]) == {
        "type": "proxy", "bind": "instance", "listen": "tcp:127.0.0.1:7000",
        "connect": "tcp:10.100.0.10:7000"}
    # A unix socket meets its consumers at a host path only root can reach, and the
    # provider's own proxy connects to it inside the provider (a symlink it plants there cannot
    # point at a host socket, #20); never through the provider's root file system.
    (host_end,) = {g.rendezvous for g in infra.services if g.service == "clip"}
    assert host_end.startswith("/run/anklume/services/") and len(host_end) < 108
    assert dict(dev["svc-vault-sign-clip"]) == {
        "type": "proxy", "bind": "instance", "listen": "unix:/run/c.sock",
        "connect": f"unix:{host_end}"}
    assert "svc-vault-sign-clip" not in state.get((Kind.INSTANCE, "perso", "perso-box")).devices
    provider = state.get((Kind.INSTANCE, "vault", "vault-sign")).devices
    assert not [k for k in provider if k.startswith("svc-")]
    assert dict(provider["svc.clip"]) == {
        "type": "proxy", "bind": "host", "listen": f"unix:{host_end}",
        "connect": "unix:/run/clip.sock", "mode": "0600"}
    assert "/var/lib/incus" not in str([dict(d) for d in dev.values()])


def test_firewall_opens_exactly_the_provider_port_from_the_host(tmp_path):
    infra = load(tmp_path, with_services({
        "signer": {"port": 7000, "listen": 9000, "consumers": ["work", "perso"]}}))
    svc = [r.text for r in desired_rules(infra) if "service" in r.comment]
    # One rule for the port, however many consumers; the consumer side never needs one.
    assert svc == ['oifname "net-vault" ip daddr 10.100.0.10 tcp dport 7000 accept '
                   'comment "service: vault-sign/signer (proxy)"']
    out = [r.text for r in desired_rules(infra) if r.chain == "output"]
    assert out.index(svc[0]) < len(out) - 1  # before the final drop
    assert not [r for r in desired_rules(infra) if r.chain == "forward" and "7000" in r.text]


@pytest.mark.parametrize("service, where, what", [
    ({"port": 0, "consumers": ["work-dev"]}, "services.s.port", "0 is not a port"),
    ({"port": 80, "listen": 70000, "consumers": ["work-dev"]}, "services.s.listen",
     "70000 is not a port"),
    ({"consumers": ["work-dev"]}, "services.s", "exactly one of port and socket"),
    ({"port": 1, "socket": "/s", "consumers": ["work-dev"]}, "services.s",
     "exactly one of port and socket"),
    ({"socket": "run/x", "consumers": ["work-dev"]}, "services.s.socket",
     "not an absolute path"),
    ({"port": 80, "consumers": ["nobody"]}, "services.s.consumers[0]", "not a known domain"),
    ({"port": 80, "consumers": ["host"]}, "services.s.consumers[0]", "not a known domain"),
    ({"port": 80, "consumers": ["vault-sign"]}, "services.s.consumers[0]",
     "the provider itself"),
    ({"port": 80, "consumers": ["old"]}, "services.s.consumers[0]", "disabled domain"),
    ({"port": 80, "consumers": ["vault-vm"]}, "services.s.consumers[0]", "is a VM"),
    ({"port": 80, "consumers": []}, "services.s.consumers", "at least one"),
    ({"port": 80}, "services.s.consumers", "missing required key"),
    ({"port": 80, "consumers": ["work-dev"], "bogus": 1}, "services.s.bogus", "unknown key"),
])
def test_invalid_service(tmp_path, service, where, what):
    got = problems(tmp_path, with_services({"s": service}))
    assert any(w.endswith(where) and what in m for w, m in got), got


def test_listen_clash_on_one_consumer(tmp_path):
    got = problems(tmp_path, with_services({
        "a": {"port": 7000, "consumers": ["work-dev"]},
        "b": {"port": 7001, "listen": 7000, "consumers": ["work"]}}))
    assert got == [("domains.vault.machines.vault-sign.services.b.consumers[0]",
                    '"work-dev" already listens on 127.0.0.1:7000 for service "a"')]


def test_provider_in_a_disabled_domain_or_socket_in_a_vm(tmp_path):
    d = copy.deepcopy(BASE)
    d["domains"]["old"]["machines"]["old-box"]["services"] = {
        "s": {"port": 80, "consumers": ["work-dev"]}}
    d["domains"]["vault"]["machines"]["vault-vm"]["services"] = {
        "t": {"socket": "/run/t.sock", "consumers": ["work-dev"]}}
    got = dict(problems(tmp_path, d))
    assert "disabled domain" in got["domains.old.machines.old-box.services.s"]
    assert "is a VM" in got["domains.vault.machines.vault-vm.services.t.socket"]


def test_user_devices_cannot_take_the_proxy_prefix(tmp_path):
    """A user device named like a generated proxy device would be silently replaced."""
    from anklume.agent.validate import load

    p = tmp_path / "infra.yml"
    p.write_text(yaml.safe_dump({
        "schema_version": 1, "project_name": "t",
        "domains": {"a": {"machines": {"a1": {"devices": {
            "svc-x-y": {"type": "disk", "source": "/srv/x", "path": "/x"}}}}}}}))
    with pytest.raises(ValidationError) as e:
        load(p)
    assert "svc- is reserved" in str(e.value) and "devices.svc-x-y" in str(e.value)
