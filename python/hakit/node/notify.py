"""Telling systemd how hakitd is doing (sd_notify's protocol, without libsystemd).

Under `Type=notify`, systemd starts the units ordered after hakitd only once it says
READY=1, which hakitd does when its socket answers: `hakit` commands run by those
units then find it.  Outside systemd (no NOTIFY_SOCKET) nothing is sent.
"""

from __future__ import annotations

import contextlib
import os
import socket

ENV = "NOTIFY_SOCKET"


def notify(state: str) -> None:
    """Send `state` ("READY=1", "STOPPING=1", "STATUS=...") if systemd listens."""
    where = os.environ.get(ENV, "")
    if not where or where[0] not in "/@":
        return
    # A name starting with @ is in the abstract namespace.
    addr = "\0" + where[1:] if where[0] == "@" else where
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)
