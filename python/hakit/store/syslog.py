"""Copy of the module log's main lines to the system log.

journald's native socket when it exists (structured fields, identifier "hakit"),
the classic /dev/log syslog socket otherwise; nothing when neither exists, as in a
minimal container.  Sending never blocks nor fails the caller.
"""

from __future__ import annotations

import os
import socket

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_SOCKET = "/dev/log"
IDENTIFIER = "hakit"
# Syslog priorities per module-log level.
PRIORITY = {"C": 2, "E": 5, "U": 5, "S": 6, "I": 6, "D": 7}
FACILITY_DAEMON = 3


def send(level: str, module: str, message: str) -> None:
    priority = PRIORITY.get(level, 6)
    text = f"{module}: {message}"
    try:
        if os.path.exists(JOURNAL_SOCKET):
            fields = (
                f"MESSAGE={text}\nPRIORITY={priority}\nSYSLOG_IDENTIFIER={IDENTIFIER}\n"
                f"HAKIT_MODULE={module}\nHAKIT_LEVEL={level}\n"
            )
            if "\n" not in text:
                _sendto(JOURNAL_SOCKET, fields.encode())
                return
        if os.path.exists(SYSLOG_SOCKET):
            line = f"<{FACILITY_DAEMON * 8 + priority}>{IDENTIFIER}[{os.getpid()}]: {text}"
            _sendto(SYSLOG_SOCKET, line.encode(errors="replace"))
    except OSError:
        pass


def _sendto(path: str, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(data, path)
