"""The agent's runtime on the appliance: paths, last result, apply lock, retries, boot outcomes,
health gate, status. Nothing here needs Incus: a fake stands in for it where a failure must be
injected."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from anklume import paths
from anklume.agent import boot, health, incus_service, last_result, lock, nft_live, retry, sdnotify
from anklume.agent.apply import Outcome, Result
from anklume.agent.incus_api import IncusError, IncusUnavailable
from anklume.agent.last_result import Counts, LastResult
from anklume.agent.plan import Action, Note, Op, Plan
from anklume.agent.reconcile import Report
from anklume.agent.resources import Kind
from anklume.errors import PermanentError

ANKLUME = str(Path(sys.executable).parent / "anklume")


@pytest.fixture
def dirs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    state, run = tmp_path / "state", tmp_path / "run"
    state.mkdir()
    monkeypatch.setenv("ANKLUME_STATE_DIR", str(state))
    monkeypatch.setenv("ANKLUME_RUN_DIR", str(run))
    return state, run


# ---------------------------------------------------------------------------------- paths

def test_paths_follow_the_environment_at_call_time(dirs):
    state, run = dirs
    assert paths.state_dir() == state and paths.run_dir() == run
    assert paths.firewall_file() == state / "firewall.nft"
    assert paths.last_result_file() == state / "last-result.json"
    assert paths.lock_file() == run / "apply.lock"
    assert paths.firstboot_record() == state / "firstboot.json"
    assert paths.pool_status_file() == run / "pool-status"
    assert paths.update_work_dir() == run / "update"


def test_the_wizard_record_is_where_the_agent_looks(dirs):
    """The wizard and the agent name the first-boot record through one function: a record the
    wizard writes under $ANKLUME_STATE_DIR is the one the agent finds."""
    from anklume.firstboot import choices

    assert boot.data_pool_problem() is None  # no record: live mode
    choices.save(choices.Choices("zfs", "anklume", "ata-disk", zpool_guid="1", done=True))
    assert "not unlocked" in (boot.data_pool_problem() or "")


def test_user_config_prefers_the_file_then_the_directory_then_none(dirs):
    state, _ = dirs
    assert paths.user_config() is None
    (state / "infra").mkdir()
    assert paths.user_config() == state / "infra"
    (state / "infra.yml").write_text("project_name: x\n")
    assert paths.user_config() == state / "infra.yml"


def test_paths_defaults_are_the_appliance_locations(monkeypatch):
    monkeypatch.delenv("ANKLUME_STATE_DIR", raising=False)
    monkeypatch.delenv("ANKLUME_RUN_DIR", raising=False)
    assert paths.last_result_file() == Path("/var/lib/anklume/last-result.json")
    assert paths.lock_file() == Path("/run/anklume/apply.lock")
    assert paths.firstboot_record() == Path("/var/lib/anklume/firstboot.json")


# ---------------------------------------------------------------------------- last result

def sample(**kw) -> LastResult:
    base = dict(time="2026-12-02T05:00:00+00:00", boot_id="b-1", agent_version="0.1.0",
                image_version=None, trigger="boot", config=last_result.EMBEDDED,
                outcome="partial", counts=Counts(changes=3, failed=1, skipped=1, conflicts=0,
                                                 kept=2),
                errors=("create instance a/x: Invalid value: lots",), drift=3, seconds=1.25,
                firewall="applied")
    base.update(kw)
    return LastResult(**base)


def test_last_result_round_trip_and_format(dirs):
    state, _ = dirs
    r = sample()
    last_result.write(r)
    got, reason = last_result.read()
    assert got == r and reason == ""
    d = json.loads((state / "last-result.json").read_text())
    assert d["schema"] == 1 and d["outcome"] == "partial" and d["image_version"] is None
    assert d["counts"] == {"changes": 3, "failed": 1, "skipped": 1, "conflicts": 0, "kept": 2}
    assert d["errors"] == ["create instance a/x: Invalid value: lots"]
    assert next(iter(d)) == "schema"
    assert [p.name for p in state.iterdir()] == ["last-result.json"]  # no tmp file left


@pytest.mark.parametrize("text,why", [
    ("{not json", "unreadable"),
    ("[]", "not a JSON object"),
    ('{"schema": 2, "outcome": "success"}', "schema 2"),
    ('{"schema": 1, "outcome": "success"}', "KeyError"),
    (json.dumps({**json.loads(sample().to_json()), "outcome": "great"}), "unknown outcome"),
])
def test_corrupt_last_result_reads_as_none_with_a_reason(dirs, text, why):
    state, _ = dirs
    (state / "last-result.json").write_text(text)
    got, reason = last_result.read()
    assert got is None and why in reason and "last-result.json" in reason


def test_missing_last_result_says_the_agent_has_not_run(dirs):
    got, reason = last_result.read()
    assert got is None and "has not run" in reason


def test_a_failed_write_leaves_the_old_result_and_no_tmp_file(dirs, monkeypatch):
    state, _ = dirs
    last_result.write(sample(outcome="success"))

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m, pytest.raises(OSError):
        m.setattr(os, "replace", boom)
        last_result.write(sample(outcome="error"))
    assert last_result.read()[0].outcome == "success"
    assert [p.name for p in state.iterdir()] == ["last-result.json"]


def test_image_version_and_boot_id(tmp_path):
    osr = tmp_path / "os-release"
    osr.write_text('ID=anklume\nIMAGE_VERSION="0.4.2"\n')
    assert last_result.image_version(osr) == "0.4.2"
    osr.write_text("ID=debian\n")
    assert last_result.image_version(osr) is None
    assert last_result.image_version(tmp_path / "none") is None
    bid = last_result.boot_id()
    assert bid is None or len(bid) == 36


# ---------------------------------------------------------------------------------- lock

HOLDER = textwrap.dedent("""
    import sys
    from anklume.agent.lock import apply_lock
    with apply_lock("anklume agent boot --trigger boot"):
        print("locked", flush=True)
        sys.stdin.readline()
""")


@pytest.fixture
def holder(dirs):
    """Another process holding the lock until its stdin gets a line."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    yield p
    if p.poll() is None:
        p.stdin.write("\n")
        p.stdin.flush()
    p.wait(timeout=10)


def release(p: subprocess.Popen) -> None:
    p.stdin.write("\n")
    p.stdin.flush()
    p.wait(timeout=10)


def test_no_wait_fails_at_once_naming_the_holder(holder):
    t = time.monotonic()
    with pytest.raises(lock.LockHeld) as e, lock.apply_lock("anklume apply", wait=False):
        pytest.fail("entered a held lock")
    assert time.monotonic() - t < 2
    msg = str(e.value)
    assert "`anklume agent boot --trigger boot`" in msg and f"(pid {holder.pid})" in msg
    assert e.value.holder.pid == holder.pid and e.value.exit_code == 75


def test_waiting_proceeds_after_release_and_says_whom_it_waited_for(holder):
    seen: list[lock.Holder] = []
    entered: list[float] = []
    released_at: list[float] = []

    def later():
        time.sleep(0.5)
        released_at.append(time.monotonic())
        release(holder)

    threading.Thread(target=later).start()
    with lock.apply_lock("anklume apply", on_wait=seen.append):
        entered.append(time.monotonic())
        # Now we are the holder: the file names us.
        fd = os.open(paths.lock_file(), os.O_RDONLY)
        try:
            assert lock.read_holder(fd).pid == os.getpid()
        finally:
            os.close(fd)
    assert [h.pid for h in seen] == [holder.pid]
    assert entered[0] >= released_at[0] - 0.05


def test_timeout_gives_up_naming_the_holder(holder):
    t = time.monotonic()
    with pytest.raises(lock.LockHeld, match=r"gave up after 0\.3 s waiting for the apply "
                                            r"started by `anklume agent boot"), \
            lock.apply_lock("anklume apply", timeout=0.3):
        pytest.fail("entered a held lock")
    assert 0.25 < time.monotonic() - t < 3


def test_apply_no_wait_cli_exits_75_naming_the_holder(holder):
    r = subprocess.run([ANKLUME, "apply", "--no-wait"], capture_output=True, text=True,
                       timeout=60, env=os.environ.copy())
    assert r.returncode == 75, r.stdout + r.stderr
    assert f"the apply started by `anklume agent boot --trigger boot` (pid {holder.pid})" \
        in r.stderr


# ------------------------------------------------------------------------- retry / Incus

class Clock:
    def __init__(self):
        self.t = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


class FlakyIncus:
    """Fails /1.0 with `error` the first `failures` times (failure injection)."""

    def __init__(self, failures: int, error: Exception | None = None, pools=("default",)):
        self.failures = failures
        self.error = error or IncusUnavailable("Incus socket /x not found")
        self.pools = list(pools)
        self.requests: list[tuple[str, str, object]] = []

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def request(self, method, path, *, project=None, params=None, body=None):
        self.requests.append((method, path, body))
        if path == "/1.0":
            if self.failures > 0:
                self.failures -= 1
                raise self.error
            return {"api_version": "1.0"}
        if path == "/1.0/storage-pools" and method == "GET":
            return [f"/1.0/storage-pools/{p}" for p in self.pools]
        if path == "/1.0/storage-pools" and method == "POST":
            self.pools.append(body["name"])
            return None
        raise AssertionError(f"unexpected request {method} {path}")


def test_backoff_doubles_from_half_a_second_to_eight():
    c = Clock()
    inc = FlakyIncus(failures=7, error=ConnectionRefusedError(111, "Connection refused"))
    assert boot.wait_for_incus(inc, 120, sleep=c.sleep, clock=c)["api_version"] == "1.0"
    assert c.slept == [0.5, 1, 2, 4, 8, 8, 8]


def test_incus_that_never_answers_is_unreachable_within_the_timeout():
    c = Clock()
    inc = FlakyIncus(failures=10**6, error=IncusError("Daemon not ready yet"))
    with pytest.raises(boot.IncusUnreachable, match="within 30 s: Daemon not ready yet") as e:
        boot.wait_for_incus(inc, 30, sleep=c.sleep, clock=c)
    assert e.value.exit_code == 75
    # Backoff up to the cap, then one last try exactly at the deadline.
    assert c.slept == [0.5, 1, 2, 4, 8, 8, 6.5] and c.t == 30


def test_retry_raises_permanent_errors_at_once():
    c = Clock()
    calls = []

    def fn():
        calls.append(1)
        raise PermanentError("refused")

    with pytest.raises(PermanentError):
        retry.retry(fn, deadline_s=100, sleep=c.sleep, clock=c)
    assert calls == [1] and c.slept == []


def test_pool_is_created_only_when_missing(tmp_path):
    inc = FlakyIncus(0, pools=())
    assert boot.ensure_pool(inc, tmp_path) is True
    method, path, body = inc.requests[-1]
    assert (method, path, body["name"], body["driver"]) == (
        "POST", "/1.0/storage-pools", "default", "btrfs")
    st = os.statvfs(tmp_path)
    assert body["config"] == {"size": f"{max(st.f_bavail * st.f_frsize // 2**20, 256)}MiB"}
    inc = FlakyIncus(0, pools=("default",))
    assert boot.ensure_pool(inc, tmp_path) is False
    assert [m for m, _, _ in inc.requests] == ["GET"]


def test_pool_falls_back_to_dir_when_btrfs_cannot_be_made(tmp_path):
    class NoBtrfs(FlakyIncus):
        def request(self, method, path, *, project=None, params=None, body=None):
            if method == "POST" and body["driver"] == "btrfs":
                self.requests.append((method, path, body))
                raise IncusError("Failed to run: mkfs.btrfs: not found")
            return super().request(method, path, project=project, params=params, body=body)

    inc = NoBtrfs(0, pools=())
    assert boot.ensure_pool(inc, tmp_path) is True
    assert [b["driver"] for m, _, b in inc.requests if m == "POST"] == ["btrfs", "dir"]
    assert inc.pools == ["default"]


def test_live_pool_size_is_the_room_left_with_a_floor():
    assert boot.live_pool(3 * 2**30)["config"]["size"] == "3072MiB"
    assert boot.live_pool(0)["config"]["size"] == "256MiB"


# ------------------------------------------------------------------------------ the boot

@pytest.fixture
def no_nft(monkeypatch):
    """The live table as the fake kernel has it (unit tests never touch the host's)."""
    state = {"table": None, "loaded": []}
    monkeypatch.setattr(nft_live, "read_table", lambda: state["table"])
    monkeypatch.setattr(nft_live, "load", lambda s: state["loaded"].append(s))
    return state


def test_invalid_config_exits_2_and_records_every_problem(dirs, no_nft):
    state, _ = dirs
    (state / "infra.yml").write_text(yaml.safe_dump({
        "project_name": "bt", "domains": {"bta": {"trust_level": "trusted", "machines": {
            "bta-1": {"ip": "10.999.0.1"}, "bta-2": {"ip": "10.110.0.2", "colour": "red"}}}}}))
    inc = FlakyIncus(failures=2)
    c = Clock()
    code = boot.boot("path", incus=inc, sleep=c.sleep)
    assert code == 2
    got, _ = last_result.read()
    assert got.outcome == "invalid" and got.trigger == "path"
    assert got.config == str(state / "infra.yml")
    assert len(got.errors) >= 2
    assert any("10.999.0.1" in e for e in got.errors)
    assert any("colour" in e for e in got.errors)
    assert got.boot_id == last_result.boot_id()
    # Nothing but the wait and the pool check was asked of Incus.
    assert {p for _, p, _ in inc.requests} == {"/1.0", "/1.0/storage-pools"}


def test_invalid_config_restores_the_saved_firewall(dirs, no_nft):
    state, _ = dirs
    (state / "infra.yml").write_text("project_name: [broken\n")
    (state / "firewall.nft").write_text("table inet anklume {}\n")
    assert boot.boot(incus=FlakyIncus(0)) == 2
    assert no_nft["loaded"] == ["table inet anklume {}\n"]


@pytest.mark.parametrize("status", [None, "state=degraded\nreason=3 wrong passphrases\n"])
def test_a_locked_data_pool_deploys_nothing_and_says_why(dirs, no_nft, status):
    """The wizard made a pool and it is not unlocked at this boot: nothing goes onto RAM in
    its place; the outcome is "degraded" (the gate passes it). The isolation stays the default
    table the boot loaded: the saved one is in the locked pool, and a table on the unencrypted
    partition was not written by this system, so it is not loaded."""
    state, run = dirs
    (state / "firstboot.json").write_text("{}")
    (state / "firewall.nft").write_text("table inet anklume {}\n")
    if status is not None:
        run.mkdir()
        (run / "pool-status").write_text(status)
    inc = FlakyIncus(0, pools=())
    assert boot.boot(incus=inc) == boot.EXIT_PARTIAL
    got, _ = last_result.read()
    assert got.outcome == "degraded", got
    assert "data pool" in got.errors[0] and "reboot" in got.errors[0], got.errors
    if status is not None:
        assert "3 wrong passphrases" in got.errors[0]
    assert [m for m, _, _ in inc.requests] == ["GET"]  # no pool made, nothing planned
    assert no_nft["loaded"] == []


def test_an_unlocked_data_pool_is_deployed_onto(dirs):
    state, run = dirs
    (state / "firstboot.json").write_text("{}")
    run.mkdir()
    (run / "pool-status").write_text("state=unlocked\nreason=the data pool is unlocked\n")
    assert boot.data_pool_problem() is None
    (state / "firstboot.json").unlink()
    (run / "pool-status").write_text("state=degraded\n")
    assert boot.data_pool_problem() is None  # no pool made: live mode deploys into RAM


def test_unreachable_incus_records_error_and_exits_75(dirs, no_nft):
    # Never answers (a finite count ran out within the real-time deadline on a fast machine:
    # boot() waits on the real clock, only its sleep is fake here).
    c = Clock()
    code = boot.boot(incus=FlakyIncus(float("inf")), incus_timeout=0.5, sleep=c.sleep)
    assert code == 75
    got, _ = last_result.read()
    assert got.outcome == "error" and "did not answer within 0.5 s" in got.errors[0]


def fw_action() -> Action:
    return Action(Op.UPDATE, Kind.FIREWALL, "inet anklume")


def inst_action(name: str) -> Action:
    return Action(Op.CREATE, Kind.INSTANCE, name, project="a")


def fake_reconcile(monkeypatch, results: list):
    """reconcile() that raises or returns the queued items in turn (failure injection); dry
    runs return an empty plan."""
    calls = []

    def rec(infra, *, prune=False, dry_run=False, incus=None, **kw):
        calls.append({"prune": prune, "dry_run": dry_run, **kw})
        if dry_run:
            return Report(Plan(), None, 0.0)
        item = results.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    import anklume.agent.reconcile as rmod
    monkeypatch.setattr(rmod, "reconcile", rec)
    return calls


def test_temporary_errors_are_retried_then_success_saves_the_firewall(dirs, no_nft,
                                                                      monkeypatch):
    state, _ = dirs
    a, fw = inst_action("x"), fw_action()
    ok = Report(Plan(actions=(fw, a)), Result((Outcome(fw), Outcome(a)), 0.1), 0.1)
    calls = fake_reconcile(monkeypatch, [IncusUnavailable("busy"), ConnectionResetError(),
                                         ok])
    no_nft["table"] = "table inet anklume {\n}\n"
    slept = []
    assert boot.boot(incus=FlakyIncus(0), sleep=slept.append) == 0
    assert slept == [0.5, 1]
    real = [c for c in calls if not c["dry_run"]]
    assert len(real) == 3 and not any(c["prune"] for c in calls)  # never prunes by default
    got, _ = last_result.read()
    assert got.outcome == "success" and got.counts.changes == 2 and got.drift == 2
    assert got.config == last_result.EMBEDDED and got.firewall == "applied"
    assert (state / "firewall.nft").read_text() == (
        "table inet anklume {}\ndelete table inet anklume\ntable inet anklume {\n}\n")


def test_a_failed_resource_is_partial_exit_1_and_not_retried(dirs, no_nft, monkeypatch):
    a, b, fw = inst_action("x"), inst_action("y"), fw_action()
    report = Report(Plan(actions=(fw, a, b), conflicts=(Note((Kind.INSTANCE, "a", "vm"),
                                                              "cannot create a VM"),)),
                    Result((Outcome(fw), Outcome(a, error="Invalid value: lots"),
                            Outcome(b, skipped="instance a/x failed")), 0.1), 0.1)
    calls = fake_reconcile(monkeypatch, [report])
    assert boot.boot(incus=FlakyIncus(0)) == 1
    assert len([c for c in calls if not c["dry_run"]]) == 1
    got, _ = last_result.read()
    assert got.outcome == "partial"
    assert got.counts == Counts(changes=1, failed=1, skipped=1, conflicts=1, kept=0)
    assert "create instance a/x: Invalid value: lots" in got.errors
    assert any("cannot create a VM" in e for e in got.errors)


@pytest.mark.skipif("problems" not in Report.__dataclass_fields__,
                    reason="reconcile without preflight")
def test_a_refused_reconcile_is_partial_and_keeps_the_saved_firewall(dirs, no_nft,
                                                                     monkeypatch):
    state, _ = dirs
    (state / "firewall.nft").write_text("table inet anklume {}\n")
    refused = Report(Plan(actions=(inst_action("x"),)), None, 0.1,
                     problems=("persistent_data of a/x is on a tmpfs",))
    fake_reconcile(monkeypatch, [refused])
    assert boot.boot(incus=FlakyIncus(0)) == 1
    got, _ = last_result.read()
    assert got.outcome == "partial" and got.firewall == "not applied"
    assert got.errors == ("persistent_data of a/x is on a tmpfs",)
    assert got.counts.changes == 0
    assert no_nft["loaded"] == ["table inet anklume {}\n"]


def test_a_failed_firewall_is_not_saved(dirs, no_nft, monkeypatch):
    state, _ = dirs
    fw = fw_action()
    fake_reconcile(monkeypatch, [Report(Plan(actions=(fw,)),
                                        Result((Outcome(fw, error="nft: syntax"),), 0), 0)])
    no_nft["table"] = "table inet anklume {\n}\n"
    assert boot.boot(incus=FlakyIncus(0)) == 1
    assert not (state / "firewall.nft").exists()
    assert last_result.read()[0].firewall == "failed"


def test_prune_at_boot_is_read_from_the_settings(dirs, no_nft, monkeypatch):
    from dataclasses import dataclass

    from anklume.agent import validate

    @dataclass(frozen=True)
    class S:
        prune_at_boot: bool = True

    class Inf:
        settings = S()

    monkeypatch.setattr(validate, "load_with_warnings", lambda p: (Inf(), []))
    calls = fake_reconcile(monkeypatch, [Report(Plan(), Result((), 0), 0)])
    assert boot.boot(incus=FlakyIncus(0)) == 0
    assert all(c["prune"] for c in calls)


def test_an_agent_crash_is_recorded_as_error(dirs, no_nft, monkeypatch):
    fake_reconcile(monkeypatch, [PermanentError("nft is missing")])
    with pytest.raises(PermanentError):
        boot.boot(incus=FlakyIncus(0))
    got, _ = last_result.read()
    assert got.outcome == "error" and "nft is missing" in got.errors[0]


@pytest.mark.skipif(shutil.which("nft") is None or os.geteuid() != 0,
                    reason="nft -c needs the nft binary and root")
@pytest.mark.parametrize("live", [None, textwrap.dedent("""\
    table inet anklume {
    \tchain forward {
    \t\ttype filter hook forward priority -1; policy accept;
    \t\tiifname "net-a" oifname "net-b" drop
    \t}
    }
    """)])
def test_saved_firewall_file_is_accepted_by_nft(tmp_path, live):
    f = tmp_path / "firewall.nft"
    f.write_text(boot.firewall_script(live))
    r = subprocess.run(["nft", "-c", "-f", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- health gate

def facts(**kw) -> health.Facts:
    base = dict(incus_error=None, table="loaded", last=sample(outcome="success"),
                last_reason="", boot_id="b-1")
    base.update(kw)
    return health.Facts(**base)


def verdict(**kw) -> tuple[bool, list[health.Check]]:
    checks = health.judge(facts(**kw))
    return health.passed(checks), checks


@pytest.mark.parametrize("outcome", ["success", "invalid", "partial", "degraded"])
def test_gate_passes_whatever_the_user_got_wrong(outcome):
    ok, checks = verdict(last=sample(outcome=outcome))
    assert ok and [c.name for c in checks] == ["incus", "firewall", "last result"]


@pytest.mark.parametrize("kw,failing", [
    ({"last": sample(outcome="error", errors=("Incus did not answer",))}, "last result"),
    ({"last": sample(boot_id="an-older-boot")}, "last result"),
    ({"last": None, "last_reason": "no such file"}, "last result"),
    ({"boot_id": None}, "last result"),
    ({"incus_error": "Incus socket not found"}, "incus"),
    ({"table": "absent"}, "firewall"),
    ({"table": "`nft list table` exited with status 1"}, "firewall"),
])
def test_gate_fails_when_the_os_did_not_do_its_job(kw, failing):
    ok, checks = verdict(**kw)
    assert not ok
    assert [c.name for c in checks if not c.ok] == [failing]


def test_gate_accepts_no_table_only_when_this_boot_explains_it():
    assert verdict(table="absent", last=sample(firewall="none"))[0]
    assert verdict(table="absent", last=sample(outcome="invalid", firewall="not applied"))[0]
    assert verdict(table="absent", last=sample(outcome="partial", firewall="not applied"))[0]
    assert not verdict(table="absent", last=sample(outcome="partial", firewall="failed"))[0]
    assert not verdict(table="absent", last=sample(outcome="success", firewall="applied"))[0]
    assert not verdict(table="absent", last=sample(firewall="none", boot_id="old"))[0]


def test_health_cli_prints_one_line_per_check(dirs, monkeypatch):
    from typer.testing import CliRunner

    from anklume.cli import app

    monkeypatch.setattr(health, "collect", lambda: facts(last=sample(outcome="error")))
    r = CliRunner().invoke(app, ["agent", "health"])
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert len(lines) == 3 and lines[2].startswith("FAIL  last result: outcome error")
    monkeypatch.setattr(health, "collect", lambda: facts(
        incus_error="Incus socket /x not found\n  hint: start Incus"))
    r = CliRunner().invoke(app, ["agent", "health"])
    assert r.exit_code == 1 and r.output.splitlines()[0] == (
        "FAIL  incus: Incus socket /x not found hint: start Incus")
    monkeypatch.setattr(health, "collect", lambda: facts())
    assert CliRunner().invoke(app, ["agent", "health"]).exit_code == 0


def test_health_waits_for_a_slow_incus_and_fails_a_dead_one():
    # A busy Incus that answers on its third try passes (real sleeps: 0.5 s + 1 s of backoff).
    incus = FlakyIncus(failures=2)
    assert health._incus_error(10.0, incus) is None
    assert [p for _, p, _ in incus.requests] == ["/1.0"] * 3
    dead = health._incus_error(0.2, FlakyIncus(failures=99))
    assert dead is not None and dead.startswith("no answer within 0.2 s: Incus socket")


def test_waits_for_incus_end_at_once_when_systemd_says_it_will_not_start():
    """Failure injection: Incus's units down (its isolation table did not load). The gate
    and the agent say why at once instead of waiting out their 60 and 120 s."""
    why = "Incus will not start: incus.socket inactive, incus.service inactive (...)"
    t0 = time.monotonic()
    assert health._incus_error(60.0, FlakyIncus(failures=99), down=lambda: why) == why
    assert time.monotonic() - t0 < 5
    c = Clock()
    with pytest.raises(boot.IncusUnreachable, match="Incus will not start") as e:
        boot.wait_for_incus(FlakyIncus(failures=99), 120, sleep=c.sleep, clock=c,
                            down=lambda: why)
    assert e.value.exit_code == 75 and c.slept == []
    # A healthy Incus never makes them ask.
    assert health._incus_error(5.0, FlakyIncus(0), down=lambda: 1 / 0) is None


def _show(*states: tuple[str, str]) -> str:
    return "\n\n".join(f"LoadState={load}\nActiveState={active}" for load, active in states)


L = "loaded"


@pytest.mark.parametrize("show, why", [
    # The isolation table did not load: Incus, which requires it, never started.
    (_show((L, "failed"), (L, "inactive"), (L, "inactive")), "anklume-firewall.service failed"),
    (_show((L, "active"), (L, "failed"), (L, "failed")), "incus.socket failed"),
    (_show((L, "active"), (L, "inactive"), (L, "inactive")), None),  # stopped: may start again
    (_show((L, "failed"), (L, "activating"), (L, "inactive")), None),  # starting
    (_show((L, "active"), (L, "active"), (L, "failed")), None),  # the socket restarts it
    (_show((L, "failed"), ("not-found", "inactive"), ("not-found", "inactive")), None),  # dev
    ("", None),
])
def test_incus_is_down_only_when_systemd_says_it_cannot_start(monkeypatch, show, why):
    monkeypatch.setattr(incus_service, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 0, show, ""))
    reason = incus_service.down_reason()
    if why is None:
        assert reason is None, reason
    else:
        assert reason is not None and reason.startswith("Incus will not start: ") \
            and why in reason, reason


def test_health_does_not_hang_on_a_wedged_incus():
    class Wedged:
        def get(self, path, **kw):
            threading.Event().wait(30)  # a daemon that accepts and never answers

    t0 = time.monotonic()
    assert health._incus_error(0.3, Wedged()) == "no answer within 0.3 s"
    assert time.monotonic() - t0 < 5


# -------------------------------------------------------------------- status and notify

def test_status_without_a_result_says_so(dirs):
    from typer.testing import CliRunner

    from anklume.cli import app

    r = CliRunner().invoke(app, ["status"])
    assert r.exit_code == 3 and r.output.startswith("No result: ") and "not run" in r.output
    r = CliRunner().invoke(app, ["status", "--json"])
    assert r.exit_code == 3 and json.loads(r.output)["last_result"] is None


def test_status_shows_the_last_result(dirs):
    from typer.testing import CliRunner

    from anklume.cli import app

    last_result.write(sample(boot_id=last_result.boot_id()))
    r = CliRunner().invoke(app, ["status"])
    assert r.exit_code == 0, r.output
    assert "outcome:  partial" in r.output
    assert "3 changes, 1 failed, 1 skipped, 0 conflicts, 2 kept" in r.output
    assert "  - create instance a/x: Invalid value: lots" in r.output
    assert "image unknown" in r.output
    d = json.loads(CliRunner().invoke(app, ["status", "--json"]).output)
    assert d["last_result"]["counts"]["failed"] == 1 and d["this_boot"] is True
    assert "UNSAFE" not in r.output and "warnings:" not in r.output


def test_status_lists_the_unsafe_opt_ins_apart_from_the_other_warnings(dirs):
    from typer.testing import CliRunner

    from anklume.cli import app

    unsafe = 'infra.yml:9: domains.d.machines.m.config.raw.lxc: machine "m" opts in to unsafe ...'
    last_result.write(sample(unsafe=(unsafe,), warnings=("infra.yml:3: legacy key",)))
    got, _ = last_result.read()
    assert got is not None and got.unsafe == (unsafe,)
    out = CliRunner().invoke(app, ["status"]).output
    lines = out.splitlines()
    i = lines.index("UNSAFE (accepted in infra.yml: these machines are not fully contained):")
    assert lines[i + 1] == f"  - {unsafe}" and lines[i + 2] == "warnings:", out
    d = json.loads(CliRunner().invoke(app, ["status", "--json"]).output)
    assert d["last_result"]["unsafe"] == [unsafe], d


def test_sd_notify_without_python_systemd_writes_the_socket(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "systemd", None)  # import fails as without the package
    addr = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(addr)
        s.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", addr)
        sdnotify.status("waiting for Incus")
        assert s.recv(100) == b"STATUS=waiting for Incus"
    monkeypatch.delenv("NOTIFY_SOCKET")
    sdnotify.status("no socket: nothing happens")
