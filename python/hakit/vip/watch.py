"""The farm's filter is supervised: a tc filter or XDP program removed by hand, a clsact
qdisc deleted, an interface deleted and re-created, and the node would go on owning
buckets nobody serves while it looks UP (Ready).  Behaviour: docs/farm.md, "The filter
is supervised".

Nothing is polled: a netlink socket joined to the link, tc and IPv4 address groups is
read from the module's event loop (add_reader; pyroute2 only decodes, as in
hakit.check.netlink), and any event about an interface the farm uses wakes one task
that compares what should be attached with what is, and repairs.  Each check is a few
bpf() queries; the pyroute2 work of placing the VIPs again runs in a worker thread.

What cannot be repaired (attach fails, the interface stays away, a tool keeps removing
the filter) takes this node out of the membership until it is repaired: a node without
its filter must not own buckets, and its VIPs come off that interface so that its
stack neither answers ARP for them nor takes others' clients unfiltered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_DELQDISC,
    RTM_DELTFILTER,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_LINK,
    RTMGRP_TC,
)

from hakit.errors import HakitError
from hakit.runtime.netlink import RouteEvents
from hakit.store.module_store import Level
from hakit.vip import alias

if TYPE_CHECKING:
    from hakit.vip.farm import FarmVip

SOURCE = "vip"
# An interface deleted and created again by a script or a driver reload comes back
# within this; beyond it the node leaves the membership rather than keep a dead share.
GONE_GRACE = 1.5
# More attach attempts than this on one interface within WINDOW: something keeps
# removing the filter (the window is wide enough that a loaded node, whose repairs come a
# few hundred milliseconds apart, still sees the fight).  The node leaves and tries again
# after a hold, doubled at each such strike (a tool fighting us must not flap the
# membership every few seconds); strikes are forgotten after a quiet STRIKES_FORGOTTEN.
MAX_ATTEMPTS, WINDOW = 3, 5.0
HOLD, HOLD_MAX, STRIKES_FORGOTTEN = 5.0, 60.0, 300.0
RETRY = 2.0  # after a failed attach, without news from netlink
_REASONS = {RTM_DELTFILTER: "tc filter deleted", RTM_DELQDISC: "clsact qdisc deleted"}

T = TypeVar("T")


@dataclass
class _Link:
    """What the watch knows of one interface that holds VIPs."""

    why: str = ""  # what the last event concerning it said
    gone_since: float | None = None
    attempts: deque[float] = field(default_factory=deque)
    hold_until: float = 0.0
    strikes: int = 0
    last_strike: float = 0.0


class FilterWatch:
    """Keeps the farm's filter attached where its VIPs are, from start to release."""

    def __init__(self, farm: FarmVip) -> None:
        self.farm = farm
        self.links: dict[str, _Link] = {}
        # (events lost: every interface is checked anyway)
        self._events = RouteEvents(RTMGRP_LINK | RTMGRP_TC | RTMGRP_IPV4_IFADDR, self._on_message,
                              on_overrun=self.wake)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._busy: asyncio.Future[Any] | None = None  # netlink work in a thread, awaited by stop()

    def start(self) -> None:
        self._events.open()
        self._task = asyncio.create_task(self._run())
        self.wake()  # what changed before the socket joined the groups

    async def stop(self) -> None:
        self._events.close()
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        # A placement cut short by the cancellation still runs in its thread: the caller
        # (release) removes the VIPs next, which must come after it.
        if self._busy is not None and not self._busy.done():
            await asyncio.wait({self._busy})

    def wake(self) -> None:
        self._wakeup.set()

    # -- netlink
    def _on_message(self, msg: Any) -> None:
        kind = msg["header"]["type"]
        if kind not in (RTM_NEWLINK, RTM_DELLINK, RTM_DELQDISC, RTM_DELTFILTER, RTM_NEWADDR):
            return
        names = {p.index: p.ifname for p in self.farm.placements}
        name = names.get(msg["index"])
        if name is not None:
            xdp = self.farm.hooks.get(msg["index"], "tc") != "tc"
            why = _REASONS.get(kind) or ("XDP program removed" if kind == RTM_NEWLINK and xdp else "")
            if why:
                self.links.setdefault(name, _Link()).why = why
        # Others' events too: an interface created again (or its address) has an index
        # unknown here.  A check costs a few bpf() queries.
        self.wake()

    # -- the check
    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._check()

    def _later(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if t.when() > loop.time()]
        self._timers.append(loop.call_later(delay, self.wake))

    async def _check(self) -> None:
        farm = self.farm
        if farm.maps is None:
            return
        now = time.monotonic()
        wanted = {p.ifname: p.index for p in farm.placements}
        present = {name: _index_of(name) for name in wanted}
        placed = False
        recreated = [name for name, index in present.items() if index not in (0, wanted[name])]
        if recreated:
            # Created again under a new index: place everything again, filter first.
            if not all([self._attempt(name, now) for name in recreated]):
                self._later(WINDOW)
                return
            try:
                await self._shielded(farm.relocate())
            except HakitError as exc:
                # Its address may not be there yet: the next address event tries again.
                for name in recreated:
                    self._gone(name, now, f"interface created again, but {exc}")
                return
            placed = True
            for name in recreated:
                if name not in farm.missing:
                    self._repaired(name, "interface deleted and created again")
            wanted = {p.ifname: p.index for p in farm.placements}
        for name, index in wanted.items():
            link = self.links.setdefault(name, _Link())
            if _index_of(name) != index:
                self._gone(name, now, "interface deleted")
                continue
            link.gone_since = None
            hook = farm.hooks.get(index, farm.hook)
            try:
                ok = farm.maps.attached(index, hook, farm.handle, farm.priority)
            except OSError as exc:
                ok = False
                link.why = link.why or (exc.strerror or str(exc)).splitlines()[0]
            if ok:
                if name in farm.missing:
                    await self._restore(name, placed)
                link.why = ""
                continue
            why = link.why or "detached"
            if now < link.hold_until:
                # (Again: the loop's clock may wake this a hair before time.monotonic() is due.)
                self._later(link.hold_until - now)
                continue
            if not self._attempt(name, now):
                if now - link.last_strike > STRIKES_FORGOTTEN:
                    link.strikes = 0
                link.strikes += 1
                link.last_strike = now
                hold = min(HOLD * 2 ** (link.strikes - 1), HOLD_MAX)
                link.hold_until = now + hold
                self._later(hold)
                await self._lose(name, f"{why} {MAX_ATTEMPTS + 1} times within {WINDOW:g} s; "
                                       f"tried again in {hold:g} s")
                continue
            try:
                farm.maps.attach(index, hook, farm.handle, farm.priority)
            except OSError as exc:
                self._later(RETRY)
                await self._lose(name, f"{why}; attaching it again failed: "
                                       f"{(exc.strerror or str(exc)).splitlines()[0]}")
                continue
            if name in farm.missing:
                await self._restore(name, placed=False)
            else:
                self._repaired(name, why)
            link.why = ""

    def _attempt(self, name: str, now: float) -> bool:
        """Count an attach attempt; False when the interface had its share of them."""
        attempts = self.links.setdefault(name, _Link()).attempts
        while attempts and now - attempts[0] > WINDOW:
            attempts.popleft()
        if len(attempts) >= MAX_ATTEMPTS:
            return False
        attempts.append(now)
        return True

    def _gone(self, name: str, now: float, why: str) -> None:
        link = self.links.setdefault(name, _Link())
        if link.gone_since is None:
            link.gone_since = now
        left = link.gone_since + GONE_GRACE - now
        if left > 0:
            self._later(left)
        else:
            self._left(name, why)  # (nothing to withdraw: the VIPs went with the interface)

    def _repaired(self, name: str, why: str) -> None:
        self.farm.log(Level.EVENT, SOURCE,
                      f"load-balancing filter on {name} was removed ({why}); attached again")

    async def _lose(self, name: str, why: str) -> None:
        if self.farm.missing.get(name) == why:
            return
        fresh = name not in self.farm.missing
        self._left(name, why)
        if fresh:
            addrs = {p.addr for p in self.farm.placements if p.ifname == name}
            try:
                await self._shielded(asyncio.to_thread(alias.remove_addrs, addrs))
            except HakitError as exc:
                self.farm.log(Level.CRITICAL, SOURCE, f"cannot remove the virtual IPs from {name}: {exc}")

    def _left(self, name: str, why: str) -> None:
        if name not in self.farm.missing:
            self.farm.log(Level.CRITICAL, SOURCE, f"load-balancing filter missing on {name} ({why}): this "
                          "node leaves the farm's membership, the other nodes serve its share")
        self.farm.filter_missing(name, why)

    async def _restore(self, name: str, placed: bool) -> None:
        farm = self.farm
        if not placed:
            try:
                await self._shielded(farm.relocate())  # its VIPs back, after the filter
            except HakitError as exc:
                await self._lose(name, str(exc))
                return
        if len(farm.missing) == 1:
            farm.log(Level.EVENT, SOURCE, f"load-balancing filter on {name} attached again: this node "
                     + ("takes its share again" if farm.opened else "is back (its share stays closed)"))
        farm.filter_back(name)

    async def _shielded(self, work: Awaitable[T]) -> T:
        """Netlink work that stop() waits for rather than cuts short: release() removes
        the VIPs after it, never before."""
        future = asyncio.ensure_future(work)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._busy = future
        return await asyncio.shield(future)


def _index_of(name: str) -> int:
    """The interface's index now, 0 when there is none of that name."""
    with contextlib.suppress(OSError):
        return socket.if_nametoindex(name)
    return 0
