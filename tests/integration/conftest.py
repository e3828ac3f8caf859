"""Integration tests run against the real Incus daemon that scripts/start-incus started."""

from __future__ import annotations

import os

import pytest

SOCKET = "/var/lib/incus/unix.socket"


@pytest.fixture(autouse=True)
def _incus_daemon(request: pytest.FixtureRequest) -> None:
    # Fail, not skip: a missing daemon is a broken test setup, and a skipped integration suite
    # would look green.
    if request.node.get_closest_marker("incus") is None:
        return
    if not os.path.exists(SOCKET):
        pytest.fail(f"Incus socket {SOCKET} not found: start the daemon with scripts/start-incus "
                    "(scripts/test does it before pytest)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("Incus integration tests need root (the socket is root's)", pytrace=False)
