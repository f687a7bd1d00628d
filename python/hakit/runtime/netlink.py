"""Netlink sockets read from an event loop: the reader every event socket of a module
process uses (routing netlink: the checkers' links and addresses, the farm filter's
supervision; the process-event connector: errd), and the routing socket, whose messages
pyroute2 decodes."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Iterable
from typing import Any

from pyroute2.netlink.rtnl.marshal import MarshalRtnl

RCVBUF = 1 << 20  # a burst of events while the loop is busy must not be lost
READ = 1 << 16


def open_socket(groups: int = 0) -> socket.socket:
    """A routing-netlink socket joined to the RTMGRP_* `groups` (none: requests and their
    answers only)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


class EventReader:
    """A netlink socket (made by `opener`) read from the running loop whenever something
    waits, nothing polled: each message `parse` finds in a datagram goes to on_message.
    When the kernel dropped messages (its receive buffer overran), on_overrun is called
    and reading goes on; once nothing more waits, on_drained."""

    def __init__(self, opener: Callable[[], socket.socket], parse: Callable[[bytes], Iterable[Any]],
                 on_message: Callable[[Any], None], on_overrun: Callable[[], None],
                 on_drained: Callable[[], None] = lambda: None) -> None:
        self._opener = opener
        self._parse = parse
        self._on_message = on_message
        self._on_overrun = on_overrun
        self._on_drained = on_drained
        self.sock: socket.socket | None = None  # while open; requests (a dump) may be sent on it

    def open(self) -> None:
        """Open the socket and read it (already open: nothing more)."""
        if self.sock is not None:
            return
        sock = self.sock = self._opener()
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        if self.sock is None:
            return
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None

    def _readable(self) -> None:
        while self.sock is not None:
            try:
                data = self.sock.recv(READ)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self._on_overrun()
                continue
            for msg in self._parse(data):
                self._on_message(msg)
        if self.sock is not None:
            self._on_drained()


class RouteEvents(EventReader):
    """Routing-netlink events of the RTMGRP_* `groups`, decoded by pyroute2."""

    def __init__(self, groups: int, on_message: Callable[[Any], None], on_overrun: Callable[[], None],
                 on_drained: Callable[[], None] = lambda: None) -> None:
        super().__init__(lambda: open_socket(groups), MarshalRtnl().parse, on_message, on_overrun, on_drained)
