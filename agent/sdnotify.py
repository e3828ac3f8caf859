"""Progress for systemd (`systemctl status` shows the last STATUS= line).

python3-systemd's notify when importable (the image has it); otherwise the datagram protocol
directly, which is all it is. Outside systemd ($NOTIFY_SOCKET unset) this does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> None:
    try:
        from systemd import daemon  # python3-systemd
    except ImportError:
        daemon = None
    if daemon is not None:
        daemon.notify(message)
        return
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), addr)
    except OSError:
        pass  # progress reporting must never break the run


def status(text: str) -> None:
    notify(f"STATUS={text}")
