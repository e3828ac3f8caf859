"""Suite-wide hooks: how the tests are spread over parallel workers, and the boot timings.

scripts/test runs pytest-xdist (`-n 2 --dist loadgroup --no-loadscope-reorder`). Two TCG
boots side by side each run about 2x slower, so the gain (69 -> 63 min measured) comes from
overlapping the boots with the image builds, the Incus tests and the unit tests.
Tests that share an expensive fixture (a chain of boots of one disk, a module's boots, the
host's one Incus daemon) must stay in one worker, or each worker would repeat the boots, or
two would drive the same Incus at once. Work is handed out in collection order, so the
longest groups come first; the unit tests fill the wait for the image build.
Without -n all of this only reorders the tests.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anklume.vm.builds import log_root

REPO = Path(__file__).resolve().parents[1]
_LOG_ROOT = log_root()
_SESSION_START = time.time()

# (group, fixtures whose users form it).
_FIXTURE_GROUPS = [
    ("update", {"builds", "update_run"}),
    ("stick", {"stick", "main_boot", "second_boot", "toram_boot", "small_ram_boot"}),
    ("pool-luks", {"luks_boots"}),
    ("pool-zfs", {"zfs_boots"}),
    ("update-mismatch", {"v2_build"}),
    ("user-vm", {"user_vm"}),
]
_INCUS_GROUP = "incus"  # tests/integration: one Incus daemon, one nft ruleset
# The order work is handed out in. The updates first: two more image builds and about 25 min of
# boots. The Incus tests next: the other worker runs them while the first one builds the image
# (a cold build is mostly single-threaded package installation), then the unit tests (see
# _rank). Then the stick's chain of four boots (~13 min), the pools (9 and 7), the mismatched
# update (its own machine, off the update run's worker: it reuses V2's build, made under the
# build lock), the other boots.
_ORDER = ["update", _INCUS_GROUP, "stick", "pool-luks", "pool-zfs", "update-mismatch"]


def _group(item: pytest.Item) -> str | None:
    names = set(getattr(item, "fixturenames", ()))
    for group, fixtures in _FIXTURE_GROUPS:
        if names & fixtures:
            return group
    if Path(str(item.path)).is_relative_to(REPO / "tests" / "integration"):
        return _INCUS_GROUP
    return None


def _rank(item: pytest.Item, group: str | None) -> float:
    if group in _ORDER:
        return _ORDER.index(group)
    if not Path(str(item.path)).is_relative_to(REPO / "tests" / "vm"):
        # Right after the Incus tests: on a fresh machine the image build outlasts them, and
        # every boot waits for it; the unit tests fill that wait instead of the end.
        return _ORDER.index(_INCUS_GROUP) + 0.5
    return len(_ORDER)


# A wrapper: its part before `yield` runs before xdist's hook reads the xdist_group marks
# (tryfirst does not order it before that hook).
@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]
                                  ) -> Iterator[None]:
    keyed = []
    for i, item in enumerate(items):
        group = _group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        keyed.append((_rank(item, group), i, item))
    items[:] = [item for _, _, item in sorted(keyed, key=lambda k: k[:2])]
    result = yield
    # xdist passes the group to its scheduler as a suffix of the node id. When that suffix is
    # missing, grouped tests would be spread out: each worker would repeat the boots, and two
    # would drive the one Incus at once. Stop instead.
    if getattr(config.option, "loadgroup", False):  # set in xdist workers only
        lost = [i.nodeid for i in items
                if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
        if lost:
            raise pytest.UsageError(
                f"pytest-xdist did not group {len(lost)} tests (first: {lost[0]}); this pytest "
                "and pytest-xdist do not work together (see pyproject.toml)")
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Read by the VM harness: each QEMU run records the group whose test started it.
    mark = item.get_closest_marker("xdist_group")
    os.environ["ANKLUME_TEST_GROUP"] = (mark.args[0] if mark and mark.args
                                        else Path(str(item.path)).stem)


def _boot_costs() -> list[str]:
    """QEMU runs and their wall time per test group, from the harness's qemu-run.json files."""
    per: dict[str, list[float]] = {}
    for f in _LOG_ROOT.glob("*/qemu-run.json"):
        if f.stat().st_mtime < _SESSION_START:
            continue
        try:
            d = json.loads(f.read_text())
        except ValueError:
            continue
        per.setdefault(d.get("group") or "?", []).append(float(d.get("seconds", 0)))
    lines = [f"{g}: {len(s)} QEMU runs, {sum(s):.0f} s" for g, s in sorted(
        per.items(), key=lambda kv: -sum(kv[1]))]
    if per:
        total = [x for s in per.values() for x in s]
        lines.append(f"all: {len(total)} QEMU runs, {sum(total):.0f} s of guest time "
                     f"(wall time of each run, two at a time with -n 2)")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Boot timings of this run at the end of the output (CI logs keep them). Here, not in
    tests/vm: with xdist only this conftest is loaded by the process that reports."""
    lines = []
    if _LOG_ROOT.is_dir():
        for t in sorted(_LOG_ROOT.glob("*/timing.txt")):
            if t.stat().st_mtime >= _SESSION_START:
                lines.append(t.read_text().strip())
    if lines:
        terminalreporter.section("VM boot timings")
        for line in lines:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"logs: {_LOG_ROOT}")
    costs = _boot_costs() if _LOG_ROOT.is_dir() else []
    if costs:
        terminalreporter.section("QEMU runs per test group")
        for line in costs:
            terminalreporter.write_line(line)

