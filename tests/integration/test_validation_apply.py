"""Issue #6 on the real Incus: what validation accepts is applied, what apply cannot do is
refused before anything changes.

Own project_name (valtest) and addressing (zone_base 5: 10.5-10.55.x.0/24, used by no other
test); host directories under /var/tmp (not a tmpfs); everything removed afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_reconcile import ANKLUME, IMAGE, exists, incus_actions

from anklume.agent.incus_api import Incus
from anklume.agent.model import GlobalSettings, Infra, bridge_name
from anklume.agent.reconcile import reconcile

pytestmark = pytest.mark.incus

PROJECT = "valtest"
LONG = "valtest-sandbox"  # 15 characters: net-valtest-sandbox would be 19


@pytest.fixture(scope="module")
def incus() -> Incus:
    return Incus()


def tear_down() -> None:
    report = reconcile(Infra(PROJECT, GlobalSettings(), ()), prune=True, force=True)
    assert report.ok, report.problems or [o.error for o in report.result.failed]


@pytest.fixture
def owned() -> Iterator[None]:
    tear_down()
    yield
    tear_down()


@pytest.fixture
def host_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="anklume-valtest-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANKLUME, *args], capture_output=True, text=True, timeout=300)


def doc(domains: dict, **global_: object) -> dict:
    return {"project_name": PROJECT, "global": {"addressing": {"zone_base": 5},
                                                "default_os_image": IMAGE, **global_},
            "domains": domains}


def write(tmp_path: Path, d: dict, name: str = "infra.yml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(p)


def incus_exec(project: str, name: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["incus", "exec", name, "--project", project, "--", "sh", "-c",
                           script], capture_output=True, text=True, timeout=60)


def snapshot(incus: Incus) -> dict:
    every = {"recursion": "1", "all-projects": "true"}
    return {
        "projects": sorted(p["name"] for p in incus.get("/1.0/projects", params={
            "recursion": "1"})),
        "networks": sorted(n["name"] for n in incus.get("/1.0/networks", params={
            "recursion": "1"}) if n.get("managed")),
        "instances": sorted((i["project"], i["name"], i["status"])
                            for i in incus.get("/1.0/instances", params=every)),
    }


def test_long_domain_profiles_volumes_and_boot_autostart(incus, owned, host_dir, tmp_path):
    d = doc({LONG: {"trust_level": "admin", "ephemeral": True, "profiles": {
        "small": {"config": {"limits.memory": "128MiB"}}}, "machines": {
            "vt-box": {"profiles": ["default", "small"],
                       "persistent_data": {"data": {"path": "/data"}}},
            "vt-off": {"boot_autostart": False}}}},
        persistent_data_base=str(host_dir / "data"), shared_volumes_base=str(host_dir / "sv"))
    d["shared_volumes"] = {"docs": {"consumers": {"vt-box": "rw"}, "propagate": True}}
    path = write(tmp_path, d)
    r = cli("apply", path)
    assert r.returncode == 0, r.stdout + r.stderr

    br = bridge_name(LONG)
    assert len(br) == 15 and br != f"net-{LONG}"
    net = incus.get(f"/1.0/networks/{br}")
    assert net["config"]["ipv4.address"] == "10.5.0.254/24"
    prof = incus.get("/1.0/profiles/default", project=LONG)
    assert prof["devices"]["eth0"]["network"] == br
    small = incus.get("/1.0/profiles/small", project=LONG)
    assert small["config"]["limits.memory"] == "128MiB"

    box = incus.get("/1.0/instances/vt-box", project=LONG)
    assert box["status"] == "Running" and box["profiles"] == ["default", "small"]
    assert box["expanded_config"]["limits.memory"] == "128MiB"
    assert box["devices"]["sv-docs"]["propagation"] == "rslave"
    # Unprivileged: the container's root is not the host's.
    assert box["config"].get("security.privileged", "false") == "false"
    w = incus_exec(LONG, "vt-box", "echo pd > /data/f && echo sv > /shared/docs/g")
    assert w.returncode == 0, w.stderr
    assert (host_dir / "data" / LONG / "vt-box" / "data" / "f").read_text() == "pd\n"
    assert (host_dir / "sv" / "docs" / "g").read_text() == "sv\n"

    off = incus.get("/1.0/instances/vt-off", project=LONG)
    assert off["status"] == "Stopped" and off["config"]["boot.autostart"] == "false"
    assert "= kept instance valtest-sandbox/vt-off: boot_autostart is false" in r.stdout

    again = cli("apply", path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert incus_actions(again.stdout) == [], again.stdout
    assert incus.get("/1.0/instances/vt-off", project=LONG)["status"] == "Stopped"


def test_propagate_shows_later_host_mounts_inside(incus, owned, host_dir, tmp_path):
    # Propagation needs the source to be a shared mount on the host (this host's / is private).
    src = host_dir / "sv" / "docs"
    (src / "later").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    try:
        subprocess.run(["mount", "--make-rshared", str(src)], check=True)
        d = doc({"vtprop": {"trust_level": "admin", "ephemeral": True,
                            "machines": {"vt-p": {}}}}, shared_volumes_base=str(src.parent))
        d["shared_volumes"] = {"docs": {"consumers": {"vt-p": "ro"}, "propagate": True}}
        r = cli("apply", write(tmp_path, d))
        assert r.returncode == 0, r.stdout + r.stderr
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "later")],
                       check=True)
        (src / "later" / "seen").write_text("yes\n")
        got = incus_exec("vtprop", "vt-p", "cat /shared/docs/later/seen")
        assert got.stdout == "yes\n", got.stdout + got.stderr
    finally:
        subprocess.run(["umount", "-l", str(src / "later")], check=False)
        subprocess.run(["umount", "-l", str(src)], check=False)


def test_changed_os_image_is_recreated_only_with_recreate(incus, owned, tmp_path):
    fingerprint = incus.get(f"/1.0/images/aliases/{IMAGE}")["target"]
    machines = {"vt-eph": {"ephemeral": True}, "vt-prot": {}}
    path = write(tmp_path, doc({"vtimg": {"trust_level": "trusted", "machines": machines}}))
    r = cli("apply", path)
    assert r.returncode == 0, r.stdout + r.stderr
    first = incus.get("/1.0/instances/vt-eph", project="vtimg")
    assert first["config"]["user.anklume.os_image"] == IMAGE

    for m in machines.values():
        m["os_image"] = fingerprint
    path = write(tmp_path, doc({"vtimg": {"trust_level": "trusted", "machines": machines}}),
                 "v2.yml")
    r = cli("apply", path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"! instance vtimg/vt-eph: os_image changed ({IMAGE} -> {fingerprint}): " \
           "recreate needed" in r.stdout
    same = incus.get("/1.0/instances/vt-eph", project="vtimg")
    assert same["config"]["volatile.uuid"] == first["config"]["volatile.uuid"]

    r = cli("apply", path, "--recreate")
    assert r.returncode == 1, r.stdout + r.stderr  # the protected one is refused
    assert "instance vtimg/vt-prot: os_image changed but security.protection.delete=true" \
        in r.stdout
    new = incus.get("/1.0/instances/vt-eph", project="vtimg")
    assert new["config"]["volatile.uuid"] != first["config"]["volatile.uuid"]
    assert new["config"]["user.anklume.os_image"] == fingerprint
    assert new["status"] == "Running"

    r = cli("apply", path, "--recreate", "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    prot = incus.get("/1.0/instances/vt-prot", project="vtimg")
    assert prot["config"]["user.anklume.os_image"] == fingerprint
    assert prot["config"]["security.protection.delete"] == "true"


BAD = {
    "eth0": ({"vtbad": {"machines": {"vt-b": {"devices": {
        "eth0": {"type": "nic", "network": "net-vtbad"}}}}}},
        "domains.vtbad.machines.vt-b.devices.eth0: eth0 is managed by anklume"),
    "other-bridge": ({"vtbad": {"profiles": {"p": {"devices": {
        "x": {"type": "nic", "network": "net-vtoth"}}}}}, "vtoth": {"trust_level": "admin"}},
        "domains.vtbad.profiles.p.devices.x: a NIC on net-vtoth, another domain's bridge"),
    "remote": ({"vtbad": {"machines": {"vt-b": {"os_image": "ubuntu:24.04"}}}},
               'domains.vtbad.machines.vt-b.os_image: image remote "ubuntu" is not supported'),
    "cron": ({"vtbad": {"machines": {"vt-b": {"snapshots_schedule": "0 0 * * 7"}}}},
             'domains.vtbad.machines.vt-b.snapshots_schedule: "0 0 * * 7" is not a cron'),
    # Containment (#20): each of these handed the container the host before.
    "raw-lxc": ({"vtbad": {"machines": {"vt-b": {"config": {
        "raw.lxc": "lxc.mount.entry = / host none bind,create=dir 0 0"}}}}},
        "domains.vtbad.machines.vt-b.config.raw.lxc: raw.lxc would weaken the containment"),
    "host-root": ({"vtbad": {"profiles": {"p": {"devices": {
        "root2": {"type": "disk", "source": "/", "path": "/host"}}}},
        "machines": {"vt-b": {"profiles": ["default", "p"]}}}},
        "domains.vtbad.profiles.p.devices.root2: host-path would weaken the containment"),
    "dev-mem": ({"vtbad": {"machines": {"vt-b": {"devices": {
        "mem": {"type": "unix-char", "path": "/dev/mem"}}}}}},
        "domains.vtbad.machines.vt-b.devices.mem: host-device would weaken the containment"),
    "incus-api": ({"vtbad": {"machines": {"vt-b": {"devices": {
        "api": {"type": "proxy", "listen": "unix:/run/api.socket",
                "connect": "unix:/var/lib/incus/unix.socket"}}}}}},
        "domains.vtbad.machines.vt-b.devices.api: proxy would weaken the containment"),
    "bridge-collision": ({"corp-sandbox": {"trust_level": "admin"},
                          bridge_name("corp-sandbox")[4:]: {"trust_level": "trusted"}},
                         'domains.corp-sandbox: bridge name "' + bridge_name("corp-sandbox")),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_rejected_inputs_change_nothing(incus, owned, tmp_path, case):
    domains, message = BAD[case]
    before = snapshot(incus)
    path = write(tmp_path, doc(domains))
    r = cli("apply", path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{path}:" in r.stderr and message in r.stderr, r.stderr
    assert snapshot(incus) == before


def test_volumes_on_tmpfs_are_refused_before_anything_changes(incus, owned, tmp_path):
    assert subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", "/dev/shm"],
                          capture_output=True, text=True).stdout.split()[-1] == "tmpfs"
    base = "/dev/shm/anklume-valtest/data"  # does not exist: its parent /dev/shm is checked
    before = snapshot(incus)
    path = write(tmp_path, doc({"vtmp": {"machines": {"vt-t": {"persistent_data": {
        "db": {"path": "/db"}}}}}}, persistent_data_base=base))
    r = cli("apply", path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"error: machine vtmp/vt-t: pd-db keeps its data in {base}/vtmp/vt-t/db, on a " \
           "tmpfs (/dev/shm)" in r.stderr, r.stderr
    assert "Nothing applied" in r.stdout
    assert snapshot(incus) == before
    assert not exists(incus, "/1.0/projects/vtmp")
    assert not Path("/dev/shm/anklume-valtest").exists()


def test_a_share_leading_out_of_its_root_through_a_symlink_changes_nothing(
        incus, owned, host_dir, tmp_path):
    """#20: a link planted under the shares root (by a machine that can write there) would
    have Incus mount whatever it points at into the consumer. Refused before anything
    changes, naming the link's target; the control without the link applies."""
    root, outside = host_dir / "sv", host_dir / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("host file\n")
    (root / "docs").symlink_to(outside)
    d = doc({"vtlink": {"ephemeral": True, "machines": {"vt-l": {}}}},
            shared_volumes_base=str(root))
    d["shared_volumes"] = {"docs": {"consumers": {"vt-l": "ro"}}}
    path = write(tmp_path, d)
    before = snapshot(incus)
    r = cli("apply", path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"machine vtlink/vt-l: sv-docs takes {root}/docs, which a symlink leads to "
            f"{outside}, outside {root}") in r.stderr, r.stderr
    assert "Nothing applied" in r.stdout
    assert snapshot(incus) == before
    # The control: the same infra with a real directory there applies, and mounts it.
    (root / "docs").unlink()
    (root / "docs").mkdir()
    (root / "docs" / "note").write_text("shared\n")
    r = cli("apply", path)
    assert r.returncode == 0, r.stdout + r.stderr
    got = incus_exec("vtlink", "vt-l", "cat /shared/docs/note 2>&1 || ls -la /")
    assert got.stdout == "shared\n", got.stdout + got.stderr


def test_an_unsafe_opt_in_is_applied_and_said(incus, owned, tmp_path):
    """#20: a capability outside the allow-list is applied only when the machine names it in
    `unsafe:`, and every plan and apply says so."""
    path = write(tmp_path, doc({"vtnest": {"ephemeral": True, "machines": {"vt-n": {
        "config": {"security.nesting": True}, "unsafe": ["security.nesting"]}}}}))
    r = cli("plan", path)
    assert r.returncode == 0, r.stdout + r.stderr
    warning = 'machine "vt-n" opts in to unsafe security.nesting'
    assert warning in r.stderr, r.stderr
    r = cli("apply", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert warning in r.stderr, r.stderr
    inst = incus.get("/1.0/instances/vt-n", project="vtnest")
    assert inst["config"]["security.nesting"] == "true"
