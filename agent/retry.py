"""Retrying what may go away by itself (Incus starting, busy, restarting), with backoff."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from anklume.errors import TemporaryError

T = TypeVar("T")
FIRST_DELAY = 0.5
MAX_DELAY = 8.0


def transient() -> tuple[type[BaseException], ...]:
    """Errors worth retrying: our TemporaryError (socket missing, lock held...) and a
    connection refused or reset on the way to Incus (requests wraps those in its own type)."""
    kinds: list[type[BaseException]] = [TemporaryError, ConnectionError]
    try:
        from requests.exceptions import ConnectionError as RequestsConnectionError
    except ImportError:  # pragma: no cover - requests comes with pylxd
        pass
    else:
        kinds.append(RequestsConnectionError)
    return tuple(kinds)


def delays(first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> Iterator[float]:
    """0.5, 1, 2, 4, 8, 8, ... seconds."""
    d = first
    while True:
        yield d
        d = min(d * 2, cap)


def retry(fn: Callable[[], T], *, deadline_s: float,
          retry_on: tuple[type[BaseException], ...] | None = None,
          on_retry: Callable[[BaseException, float], None] | None = None,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> T:
    """Call fn until it returns; retry the `retry_on` errors (default: transient()) with
    exponential backoff, the last try at the deadline (deadline_s seconds from now); then the
    last error is raised as it was. Other errors are raised at once."""
    kinds = retry_on or transient()
    end = clock() + deadline_s
    for step in delays():
        try:
            return fn()
        except kinds as e:
            delay = min(step, end - clock())
            if delay <= 0:
                raise
            if on_retry is not None:
                on_retry(e, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # delays() never ends
