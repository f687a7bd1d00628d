"""rtnetlink for the checkers: link and address events, nothing polled.

A plain netlink socket read from the event loop (asyncio's datagram transport, which
pyroute2's async API uses, does not accept netlink sockets under uvloop); pyroute2
encodes the requests and decodes the messages.  A checker's socket joins the
multicast groups first and then asks for a dump on the same socket, so that a change
racing with the dump is queued behind it and applied in the kernel's order.
"""

from __future__ import annotations

import itertools
import socket
from abc import abstractmethod
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETLINK
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from hakit.check.base import DOWN, UP, Checker
from hakit.runtime.netlink import RouteEvents, open_socket

LINKS, ADDRESSES = "links", "addresses"
_DUMPS = {LINKS: (ifinfmsg, RTM_GETLINK), ADDRESSES: (ifaddrmsg, RTM_GETADDR)}
_sequence = itertools.count(1)


def request_dump(sock: socket.socket, what: str) -> int:
    """Ask for every link or address; the answer ends with NLMSG_DONE of the returned sequence."""
    cls, kind = _DUMPS[what]
    msg = cls()
    seq = next(_sequence)
    msg["header"]["type"] = kind
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = seq
    msg["family"] = socket.AF_UNSPEC
    msg.encode()
    sock.send(msg.data)
    return seq


def dump(what: str) -> list[Any]:
    """Every link or address now (blocking: for one-off lookups)."""
    out: list[Any] = []
    marshal = MarshalRtnl()
    with open_socket() as sock:
        seq = request_dump(sock, what)
        while True:
            for msg in marshal.parse(sock.recv(1 << 16)):
                if msg["header"]["sequence_number"] != seq:
                    continue
                if msg["header"]["type"] in (NLMSG_DONE, NLMSG_ERROR):
                    return out
                out.append(msg)


class NetlinkChecker(Checker):
    groups: int  # RTMGRP_* multicast groups
    what: str  # LINKS or ADDRESSES

    _events: RouteEvents | None = None

    @abstractmethod
    def reset(self) -> None:
        """Forget what the last dump told."""

    @abstractmethod
    def on_message(self, msg: Any) -> None:
        """One object of the dump, or one change."""

    @abstractmethod
    def is_up(self) -> bool: ...

    async def start(self) -> None:
        self._events = RouteEvents(self.groups, self._on_event, on_overrun=self._redump,
                                   on_drained=self._verdict)
        self._events.open()
        try:
            self._redump()
        except BaseException:
            self._events.close()
            raise

    async def stop(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        await super().stop()

    def _redump(self) -> None:
        """Ask the kernel for its state (at start, and when events were lost)."""
        assert self._events is not None and self._events.sock is not None
        self.reset()
        self._dump_seq: int | None = request_dump(self._events.sock, self.what)

    def _on_event(self, msg: Any) -> None:
        kind = msg["header"]["type"]
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            if msg["header"]["sequence_number"] == self._dump_seq:
                self._dump_seq = None
        else:
            self.on_message(msg)

    def _verdict(self) -> None:
        # A verdict from half a dump would flap: wait for its end.
        if self._dump_seq is None:
            self.publish(UP if self.is_up() else DOWN)
