"""A thin, thread-safe wrapper over pylxd's raw API nodes for the Incus unix socket.

We use `client.api` directly (not pylxd's object layer): one recursive request per resource
kind is what keeps a no-op reconcile of many instances under a second, and the raw JSON is what
the planner's fixtures record.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from anklume.errors import PermanentError, TemporaryError

SOCKET = os.environ.get("ANKLUME_INCUS_SOCKET", "/var/lib/incus/unix.socket")
OPERATION_TIMEOUT = 600  # seconds; image unpacking of a big image can take minutes


class IncusError(PermanentError):
    """Incus refused a request; the message is Incus's own explanation."""


class IncusUnavailable(TemporaryError):
    pass


class Incus:
    """One pylxd client per thread: requests sessions are not meant to be shared by threads
    and pylxd's unix-socket pool keeps a single connection per client."""

    def __init__(self, socket: str = SOCKET) -> None:
        self.socket = socket
        self._local = threading.local()

    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            if not os.path.exists(self.socket):
                raise IncusUnavailable(
                    f"Incus socket {self.socket} not found",
                    hint="start Incus (on a test host: scripts/start-incus)")
            import pylxd  # imported late: costs ~150 ms and only apply/plan need it

            try:
                client = pylxd.Client(endpoint=self.socket)
            except Exception as e:  # pylxd raises its own ClientConnectionFailed and others
                raise IncusUnavailable(f"cannot talk to Incus at {self.socket}: {e}") from e
            api = self._local.api = client.api
        return api

    def _node(self, path: str) -> Any:
        node = self._api()
        for part in path.strip("/").split("/"):
            if part != "1.0":
                node = node[part]
        return node

    def request(self, method: str, path: str, *, project: str | None = None,
                params: dict[str, str] | None = None, body: Any = None) -> Any:
        """Send one request; wait for it when Incus answers with a background operation.
        Returns the response metadata; raises IncusError with Incus's message."""
        from pylxd import exceptions

        q = dict(params or {})
        if project:
            q["project"] = project
        kw: dict[str, Any] = {"params": q}
        if body is not None:
            kw["json"] = body
        try:
            resp = getattr(self._node(path), method.lower())(**kw)
        except exceptions.LXDAPIException as e:
            raise IncusError(_message(e)) from None
        data = resp.json()
        if data.get("type") == "async":
            return self._wait(data["operation"])
        return data.get("metadata")

    def _wait(self, operation: str) -> Any:
        from pylxd import exceptions

        op_id = operation.rstrip("/").rsplit("/", 1)[-1]
        try:
            resp = self._api().operations[op_id].wait.get(
                params={"timeout": str(OPERATION_TIMEOUT)}, timeout=OPERATION_TIMEOUT + 30)
        except exceptions.LXDAPIException as e:
            raise IncusError(_message(e)) from None
        md = resp.json().get("metadata") or {}
        if md.get("status_code") != 200:
            raise IncusError(md.get("err") or f"operation {op_id} ended {md.get('status')}")
        return md.get("metadata")

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)


def _message(e: Exception) -> str:
    resp = getattr(e, "response", None)
    if resp is not None:
        try:
            return str(resp.json().get("error") or resp.text).strip()
        except ValueError:
            return (resp.text or str(e)).strip()
    return str(e)
