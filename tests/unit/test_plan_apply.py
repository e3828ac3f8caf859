"""apply() against a fake Incus: request shapes, failure isolation, and the CLI's rendering."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from anklume.agent.apply import apply, image_source
from anklume.agent.desired import desired
from anklume.agent.incus_api import IncusError
from anklume.agent.incus_state import parse
from anklume.agent.plan import plan
from anklume.agent.plan_text import format_plan, format_result
from anklume.agent.validate import load
from anklume.errors import AnklumeError

FIXTURES = Path(__file__).parent / "fixtures"


def observed(name: str):
    return parse(json.loads((FIXTURES / f"{name}.json").read_text()))


class FakeIncus:
    def __init__(self, fail: dict[tuple[str, str], str] | None = None):
        self.calls: list[tuple[str, str, str | None, object]] = []
        self.fail = fail or {}
        self.lock = threading.Lock()

    def request(self, method, path, *, project=None, params=None, body=None):
        with self.lock:
            self.calls.append((method, path, project, body))
        if (method, path) in self.fail:
            raise IncusError(self.fail[(method, path)])
        return None


@pytest.fixture(scope="module")
def infra():
    return load(None)


def test_one_failure_is_reported_and_only_skips_its_dependents(infra):
    p = plan(desired(infra, default_image="anklume/busybox"), observed("fresh"))
    fake = FakeIncus()
    bad_body = "Invalid config: Unknown configuration key: bogus.key"

    def request(method, path, *, project=None, params=None, body=None):
        with fake.lock:
            fake.calls.append((method, path, project, body))
        if method == "POST" and path == "/1.0/instances" and body["name"] == "work-web":
            raise IncusError(bad_body)

    fake.request = request
    r = apply(p, fake, workers=4)
    assert [(o.action.label, o.error) for o in r.failed] == [("instance work/work-web", bad_body)]
    assert [o.action.label for o in r.skipped] == ["instance work/work-web"]  # its start
    started = {c[1] for c in fake.calls if c[1].endswith("/state")}
    assert started == {"/1.0/instances/admin-ctl/state", "/1.0/instances/perso-box/state",
                       "/1.0/instances/work-dev/state"}
    text = format_result(r)
    assert f"error: create instance work/work-web: {bad_body}" in text
    assert "1 failed, 1 skipped" in text


def test_a_failed_project_skips_what_lives_in_it(infra):
    p = plan(desired(infra, default_image="anklume/busybox"), observed("fresh"))
    fake = FakeIncus()
    orig = fake.request

    def request(method, path, *, project=None, params=None, body=None):
        if path == "/1.0/projects" and body["name"] == "perso":
            raise IncusError("boom")
        return orig(method, path, project=project, params=params, body=body)

    fake.request = request
    r = apply(p, fake)
    assert {o.action.label for o in r.skipped} == {"profile perso/default",
                                                   "instance perso/perso-box"}
    assert len(r.failed) == 1
    assert not [c for c in fake.calls if c[2] == "perso"]


def test_request_shapes(infra):
    p = plan(desired(infra, default_image="anklume/busybox"), observed("fresh"))
    fake = FakeIncus()
    apply(p, fake)
    calls = {(m, path, proj): body for m, path, proj, body in fake.calls}
    # A project's default profile exists with the project: it is filled in, not created.
    prof = calls[("PUT", "/1.0/profiles/default", "work")]
    assert prof["devices"]["eth0"] == {"type": "nic", "name": "eth0", "network": "net-work"}
    inst = next(b for m, path, proj, b in fake.calls
                if m == "POST" and path == "/1.0/instances" and b["name"] == "work-dev")
    assert inst["source"] == {"type": "image", "alias": "anklume/busybox"}
    assert inst["type"] == "container" and inst["profiles"] == ["default"]
    assert calls[("PUT", "/1.0/instances/work-dev/state", "work")] == {"action": "start"}
    net = calls[("POST", "/1.0/networks", None)]
    assert net["type"] == "bridge" and net["config"]["ipv4.address"] == "10.110.0.254/24"


def test_update_keeps_incus_volatile_keys(infra):
    have = observed("drifted")
    p = plan(desired(infra), have)
    fake = FakeIncus()
    apply(replace(p, actions=tuple(a for a in p if a.label == "instance work/work-web")), fake)
    (m, path, proj, body), = fake.calls
    assert (m, path, proj) == ("PUT", "/1.0/instances/work-web", "work")
    assert "limits.memory" not in body["config"]
    assert body["config"]["volatile.eth0.hwaddr"]
    assert body["architecture"] == "x86_64"


def test_forced_delete_of_protected_running_instance(infra):
    p = plan(desired(replace(infra, domains=tuple(d for d in infra.domains
                                                  if d.name != "perso"))),
             observed("default-applied"), prune=True, force=True)
    fake = FakeIncus()
    apply(p, fake, workers=1)
    assert [(m, path) for m, path, proj, _ in fake.calls] == [
        ("PATCH", "/1.0/instances/perso-box"),
        ("PUT", "/1.0/instances/perso-box/state"),
        ("DELETE", "/1.0/instances/perso-box"),
        ("DELETE", "/1.0/projects/perso"),
        ("DELETE", "/1.0/networks/net-perso"),
    ]


def test_image_sources():
    assert image_source("anklume/busybox") == {"type": "image", "alias": "anklume/busybox"}
    assert image_source("local:debian") == {"type": "image", "alias": "debian"}
    assert image_source("6ebc28f1b79d") == {"type": "image", "fingerprint": "6ebc28f1b79d"}
    src = image_source("images:debian/13")
    assert src["alias"] == "debian/13" and src["protocol"] == "simplestreams"
    with pytest.raises(AnklumeError, match="unknown image remote"):
        image_source("nowhere:debian/13")


def test_plan_rendering(infra):
    text = format_plan(plan(desired(infra, default_image="x"), observed("drifted"), prune=True))
    lines = text.splitlines()
    assert "~ instance admin/admin-ctl" in lines
    assert "    profiles: default,used -> default" in lines
    assert "> start instance perso/perso-box  (is stopped)" in lines
    assert "- profile admin/extra  (not declared)" in lines
    assert lines[-1] == "Plan: 2 to update, 2 to delete, 1 to start"
    ip = replace(infra, domains=tuple(d for d in infra.domains if d.name != "work"))
    text = format_plan(plan(desired(ip), observed("default-applied")))
    assert "= kept instance work/work-dev: not declared any more; `apply --prune` deletes it" \
        in text
    assert text.splitlines()[-1].startswith("No changes: 2 projects")
