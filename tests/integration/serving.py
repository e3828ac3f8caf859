"""A server the integration tests play on the host: it answers every connection in a thread
until its block ends. The caller binds and listens first, so it is ready when handed over
(readiness is never a sleep here)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def answering(srv: socket.socket, reply: bytes, *, read_request: bool = False
              ) -> Iterator[None]:
    """Answer each connection to the listening `srv` with `reply`, after reading the request
    when `read_request` (closing with a request unread resets the connection, and the reply
    with it, somewhere along a proxy); `srv` is closed at the end."""
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = srv.accept()
                with conn:
                    if read_request:
                        conn.settimeout(5)
                        conn.recv(4096)
                    conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)
        srv.close()
