"""`anklume agent boot` / `agent health` / the apply lock against the real Incus and nft.

Own project_name (boottest) and addressing (zone_base 30: 10.30.61.0/24, away from the other
suites' 100 and 200); the state and run directories are the test's own tmp dirs. Everything
made is removed: a prune of an empty infra for boottest, before and after each test.
Like the other suites, run under `flock /tmp/anklume-incus-tests.lock` (one nft table per host).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from anklume.agent.incus_api import Incus
from anklume.agent.model import GlobalSettings, Infra
from anklume.agent.reconcile import reconcile

pytestmark = pytest.mark.incus

IMAGE = "anklume/busybox"
ANKLUME = str(Path(sys.executable).parent / "anklume")
PROJECT = "boottest"
DOMAIN = "btd"


def infra_doc(machines: dict) -> dict:
    return {"project_name": PROJECT,
            "global": {"addressing": {"zone_base": 30}, "default_os_image": IMAGE},
            "domains": {DOMAIN: {"trust_level": "admin", "subnet_id": 61, "ephemeral": True,
                                 "machines": machines}}}


def tear_down() -> None:
    report = reconcile(Infra(PROJECT, GlobalSettings(), ()), prune=True, force=True)
    assert report.ok, [o.error for o in report.result.failed]


@pytest.fixture
def env(tmp_path) -> Iterator[dict[str, str]]:
    tear_down()
    state, run = tmp_path / "state", tmp_path / "run"
    state.mkdir()
    yield {**os.environ, "ANKLUME_STATE_DIR": str(state), "ANKLUME_RUN_DIR": str(run)}
    tear_down()


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([ANKLUME, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def last(env: dict[str, str]) -> dict:
    return json.loads((Path(env["ANKLUME_STATE_DIR"]) / "last-result.json").read_text())


def running(incus: Incus, name: str) -> bool:
    return incus.get(f"/1.0/instances/{name}", project=DOMAIN)["status"] == "Running"


def test_boot_applies_saves_the_firewall_passes_health_and_converges(env):
    state = Path(env["ANKLUME_STATE_DIR"])
    (state / "infra.yml").write_text(yaml.safe_dump(infra_doc({"btd-1": {"ip": "10.30.61.11"}})))

    r = cli(env, "agent", "boot")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Boot reconcile done" in r.stderr and "outcome=success" in r.stderr
    got = last(env)
    assert got["outcome"] == "success" and got["trigger"] == "boot", got
    assert got["config"] == str(state / "infra.yml")
    assert got["counts"]["changes"] >= 4 and got["counts"]["failed"] == 0  # project..start
    assert got["drift"] == got["counts"]["changes"]
    assert got["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert running(Incus(), "btd-1")

    fw = state / "firewall.nft"
    text = fw.read_text()
    assert text.startswith("table inet anklume {}\ndelete table inet anklume\n"), text[:200]
    assert '"net-btd"' in text
    chk = subprocess.run(["nft", "-c", "-f", str(fw)], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stderr
    assert got["firewall"] == "applied"

    h = cli(env, "agent", "health", timeout=60)
    assert h.returncode == 0, h.stdout + h.stderr
    assert [x.split()[0] for x in h.stdout.splitlines()] == ["ok", "ok", "ok"], h.stdout

    s = cli(env, "status", timeout=60)
    assert s.returncode == 0 and "outcome:  success" in s.stdout, s.stdout

    again = cli(env, "agent", "boot", "--trigger", "path")
    assert again.returncode == 0, again.stdout + again.stderr
    got = last(env)
    assert got["outcome"] == "success" and got["trigger"] == "path"
    assert got["counts"]["changes"] == 0 and got["drift"] == 0, got


def test_status_shows_the_unsafe_opt_ins_the_boot_applied(env):
    """#20: a capability that weakens containment, accepted with `unsafe:`, is applied by the
    boot run and listed apart by `anklume status` (and its JSON) until the opt-in is gone."""
    state = Path(env["ANKLUME_STATE_DIR"])
    (state / "infra.yml").write_text(yaml.safe_dump(infra_doc({"btd-1": {
        "ip": "10.30.61.11", "config": {"security.nesting": True},
        "unsafe": ["security.nesting"]}})))
    r = cli(env, "agent", "boot")
    assert r.returncode == 0, r.stdout + r.stderr
    assert Incus().get("/1.0/instances/btd-1", project=DOMAIN)["config"][
        "security.nesting"] == "true"
    s = cli(env, "status", timeout=60)
    lines = s.stdout.splitlines()
    head = "UNSAFE (accepted in infra.yml: these machines are not fully contained):"
    assert head in lines, s.stdout
    assert 'machine "btd-1" opts in to unsafe security.nesting' in lines[lines.index(head) + 1]
    assert last(env)["unsafe"] and not last(env)["warnings"], last(env)


def test_two_concurrent_applies_run_one_after_the_other(env, tmp_path):
    machines = {f"btd-{n}": {"ip": f"10.30.61.{10 + n}"} for n in range(1, 4)}
    path = tmp_path / "infra.yml"
    path.write_text(yaml.safe_dump(infra_doc(machines)))
    lock = Path(env["ANKLUME_RUN_DIR"]) / "apply.lock"

    first = subprocess.Popen([ANKLUME, "apply", str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    # Start the second only once the first holds the lock, so it has to wait.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:
        try:
            if json.loads(lock.read_text() or "{}").get("pid") == first.pid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    assert first.poll() is None, "the first apply ended before the second started"
    second = subprocess.Popen([ANKLUME, "apply", str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)

    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2
    assert f"waiting for the apply started by `anklume apply {path}` (pid {first.pid})" \
        in err2, err2
    assert "waiting for" not in err1
    # The second planned from what the first made: nothing left for it to do in Incus.
    assert out2.startswith("No changes: "), out2
    incus = Incus()
    assert all(running(incus, m) for m in machines)
