"""A routing-netlink socket for events read from an event loop (the checkers' links and
addresses, the farm filter's supervision): pyroute2 decodes what it receives."""

from __future__ import annotations

import socket

RCVBUF = 1 << 20  # a burst of events while the loop is busy must not be lost


def open_socket(groups: int = 0) -> socket.socket:
    """Joined to the RTMGRP_* `groups` (none: requests and their answers only)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock
