"""Sending and hearing a module's heartbeats on every LAN it names.

Every `pulse` this node sends its payload (the module's state) to each peer on
each LAN, and at once whenever the payload changes, so a state change reaches
the peer in one network trip rather than one pulse.  A peer whose datagrams stop
on a LAN for `timeout` is down on that LAN; a peer down on every LAN is lost.
`heartbeat.<LAN>` is up while some peer is heard on that LAN, and
`heart.late.<LAN>.<peer>` says how late the peer's datagrams came there (see _report).

The heart runs in a thread of its own, on its own event loop: sending, receiving and
the loss deadlines never wait behind the module's work (a bucket table, a script
launched, a store written, a log line), so a busy module process is not taken for a
dead one.  What it tells the module (resources, log lines, `on_change`) goes to the
module's loop; what the module tells it (`update`) comes to the heart's loop.

A thread still shares the GIL, and a socket call gives it up: taking it back from a
busy module loop waited the interpreter's switch interval, 5 ms, so a pulse to 31 peers
(a sendto and a recvfrom each) took some 400 ms behind a loop that computed, enough to
be taken for lost.  So the datagrams are read in batches (hakit._dgram, recvmmsg: one
GIL release per LAN and read) and the heart shortens the switch interval to
SWITCH_INTERVAL, which costs nothing while the module's loop is alone to run.  And the
loop may lose its CPU while it holds the GIL: so the pulses, encoded several at a time
in advance, go out from a native thread that needs no GIL (`_arm`).

It reads its sockets in batches, every pulse / TICK_PULSES and at each peer's
deadline, not as each datagram arrives: a farm of 32 nodes sends each node 155
datagrams a second, and waking for each cost more than handling them (docs/engine.md).
The module hears of a batch's news once (`on_change`).

Heard means fresh: a datagram counts only if it echoes this process's challenge
(protocol.py), which the peer learns from this node's own datagrams.  So a peer is
heard one round trip after either side starts, and a node that the peer cannot hear
on any LAN does not hear the peer either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop

from hakit import _dgram
from hakit.heart.protocol import (
    NONCE_LEN,
    Beat,
    Rejected,
    decode_head,
    encode_for,
    pack_payload,
    unpack_payload,
)
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.store.module_store import Level
from hakit.throttle import Throttle

REJECT_LOG_INTERVAL_S = 60.0  # a flood of forged datagrams must not flood the module log
FINAL_BEATS = 3  # a stopping node says so a few times: one lost datagram must not cost a timeout
TICK_PULSES = 4  # datagrams are read every pulse / TICK_PULSES
RCVBUF = 1 << 20  # what peers send while this process stalls (capped by net.core.rmem_max)
MAX_READ = 2048  # a valid heartbeat fits MAX_DATAGRAM; a longer one fails its tag
READ_BATCH = 64  # datagrams per read call (hakit._dgram: one GIL release per call)
SWITCH_INTERVAL = 0.001  # s: how long the heart's thread may wait for the GIL (5 ms by default)
# The pulses go out from a native pacer (hakit._dgram.Pacer), PACED_PULSES encoded at a
# time and replaced every REARM_PULSES: should this thread be late, the pacer still has
# PACED_PULSES - REARM_PULSES to send.
PACED_PULSES, REARM_PULSES = 10, 5
# How often the lateness of each peer's datagrams goes to the module's resources: often
# enough for a monitoring scrape, rarely enough that the store barely notices.
LATENESS_REPORT_S = 5.0


@dataclass
class Lan:
    name: str
    local_addr: str
    peers: dict[str, str]  # peer node -> its address on this LAN


@dataclass
class _Peer:
    heard: dict[str, float] = field(default_factory=dict)  # LAN -> monotonic time of last datagram
    seq: dict[str, tuple[int, int]] = field(default_factory=dict)  # LAN -> last (incarnation, seq)
    newest: tuple[int, int] = (0, -1)
    # The peer's challenge, from its newest datagram, fresh or not: a replayed one, being
    # older than the peer's latest, cannot make this node answer an old challenge.
    challenge: bytes = b""
    challenge_from: tuple[int, int] = (0, -1)
    payload: dict[str, Any] | None = None
    packed: bytes = b""  # the payload as last received: an unchanged one is not unpacked again
    alive: bool = False
    up: set[str] = field(default_factory=set)  # the LANs it is heard on
    worst_gap: dict[str, float] = field(default_factory=dict)  # LAN -> longest gap since the last report


@dataclass
class _Socket:
    lan: Lan
    sock: socket.socket


class Heart:
    def __init__(
        self,
        *,
        module: str,
        node: str,
        key: bytes,
        port: int,
        pulse: float,
        timeout: float,
        lans: list[Lan],
        incarnation: int,
        resources: Resources,
        log: ModuleLog,
        on_change: Callable[[], None],
    ) -> None:
        self.module = module
        self.node = node
        self.key = key
        self.port = port
        self.pulse = pulse
        self.timeout = timeout
        self.tick = pulse / TICK_PULSES
        self.lans = lans
        self._lan_named = {lan.name: lan for lan in lans}  # for the loss deadlines, which know LAN names
        self.resources = resources
        self.log = log
        self.on_change = on_change
        self.payload: dict[str, Any] = {}
        self._packed = pack_payload({})  # the payload as every datagram carries it
        self._published: dict[str, bool] = {}  # heartbeat.<LAN> as last handed to the module
        # Some peer's news since the module was last told: it is told once per batch read
        # and judged (each telling makes it look at every peer: a farm's bucket tables).
        self._news = False
        self.incarnation = incarnation
        self.nonce = os.urandom(NONCE_LEN)
        self.seq = 0
        self._armed = 0.0  # when the pacer last got pulses
        self._answer = False  # a peer's new challenge to answer with the next batch's pulses
        self._pacer: _dgram.Pacer | None = None
        self.peers = {p: _Peer() for lan in lans for p in lan.peers}
        self._sockets: list[_Socket] = []
        self._tasks: list[asyncio.Task[None]] = []
        # Set by _settle once a timeout has passed since the sockets opened, before the
        # LANs nobody was heard on are published down: what that news wakes sees it set
        # (a clock read there could still fall short of the heart loop's timer).
        self._settled = False
        self._main: asyncio.AbstractEventLoop | None = None  # the module's loop
        self._loop: asyncio.AbstractEventLoop | None = None  # the heart's own, in _thread
        self._thread: threading.Thread | None = None
        # Once per interval in all, not per source: sources are the sender's to forge, so
        # per-source state would grow, and log, without bound.
        self._reject_log = Throttle(REJECT_LOG_INTERVAL_S)

    # -- life cycle (called from the module's loop)
    async def start(self) -> None:
        """Open the sockets and start beating, in the heart's own thread."""
        main = self._main = asyncio.get_running_loop()
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        opened: asyncio.Future[None] = main.create_future()

        def report(exc: BaseException | None) -> None:
            if opened.done():
                return
            if exc is None:
                opened.set_result(None)
            else:
                opened.set_exception(exc)

        def run() -> None:
            loop = self._loop = uvloop.new_event_loop()
            try:
                loop.run_until_complete(self._open())
            except OSError as exc:
                main.call_soon_threadsafe(report, exc)
                loop.close()
                return
            main.call_soon_threadsafe(report, None)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"heart {self.module}", daemon=True)
        self._thread.start()
        try:
            await opened
        except OSError:
            await asyncio.to_thread(self._thread.join)
            self._loop = self._thread = None
            raise

    async def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close(), self._loop))
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop = self._thread = None

    async def stop(self, final: dict[str, Any]) -> None:
        """Tell the peers this node's last state, then go silent."""
        if self._loop is not None:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._last_words(final), self._loop))
        await self.close()

    # -- in the heart's thread
    async def _open(self) -> None:
        for lan in self.lans:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                sock.bind((lan.local_addr, self.port))
            except OSError as exc:
                sock.close()
                await self._close()
                raise OSError(
                    exc.errno, f"heartbeat socket on LAN {lan.name} ({lan.local_addr}:{self.port}): "
                    f"{exc.strerror}"
                ) from None
            self._sockets.append(_Socket(lan, sock))
        self._pacer = _dgram.Pacer()
        self._tasks = [asyncio.create_task(self._send_loop()), asyncio.create_task(self._settle()),
                       asyncio.create_task(self._read_loop()), asyncio.create_task(self._report_loop())]

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _close(self) -> None:
        await self._stop_tasks()
        if self._pacer is not None:
            self._pacer.close()  # (before the sockets it sends on)
            self._pacer = None
        for s in self._sockets:
            s.sock.close()
        self._sockets = []

    async def _last_words(self, final: dict[str, Any]) -> None:
        await self._stop_tasks()  # nothing replaces the last words meanwhile
        self.payload = dict(final)
        self._packed = pack_payload(self.payload)
        self._arm(FINAL_BEATS, self.pulse / 4)
        await asyncio.sleep(FINAL_BEATS * self.pulse / 4)

    def _to_module(self, fn: Callable[..., object], *args: Any) -> None:
        """Run fn on the module's loop (before start, nothing runs elsewhere: at once)."""
        if self._main is None:
            fn(*args)
        else:
            self._main.call_soon_threadsafe(fn, *args)

    # -- what the module reads
    def update(self, payload: dict[str, Any]) -> None:
        if payload != self.payload:
            self.payload = dict(payload)
            self._packed = pack_payload(self.payload)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._arm)

    def peer(self, name: str) -> dict[str, Any] | None:
        """The peer's last payload while it is heard; None when lost or never heard."""
        p = self.peers.get(name)
        return p.payload if p is not None and p.alive else None

    def settled(self) -> bool:
        """Whether a peer that runs had time to be heard since this node started."""
        return self._settled

    # -- wire
    def _arm(self, count: int = PACED_PULSES, period: float | None = None) -> None:
        """Encode the next `count` pulses to every peer for the pacer, which sends the
        first at once and the others one every `period` (the pulse), in place of those
        left from the last call: news go out at once, and the pulses keep going while
        this thread cannot run (docs/engine.md, "Heartbeats")."""
        names = list(self.peers)
        rounds = []
        for _ in range(count):
            self.seq += 1
            beat = Beat(self.module, self.node, self.incarnation, self.seq, self.nonce, b"", {})
            # One datagram per peer: each answers that peer's challenge.
            datagrams = encode_for(self.key, beat, [self.peers[n].challenge for n in names], self._packed)
            rounds.append([(s.sock.fileno(), data, addr) for s in self._sockets
                           for name, data in zip(names, datagrams, strict=True)
                           if (addr := s.lan.peers.get(name)) is not None])
        if self._pacer is not None:
            self._pacer.arm(self.pulse if period is None else period, self.port, rounds)
            self._armed = time.monotonic()

    async def _read_loop(self) -> None:
        """Read what came, judge the peers, sleep until the next tick or the next peer's
        deadline, whichever is first: a loss is seen when its timeout expires, and always
        after reading (after a stall of this process, many datagrams may wait: judging
        without them would drop peers that never went silent)."""
        while True:
            self._read()
            if self._answer:
                self._answer = False
                self._arm()
            now = time.monotonic()
            wake = now + self.tick
            for name, peer in self.peers.items():
                for lan_name in list(peer.up):
                    deadline = peer.heard[lan_name] + self.timeout
                    if deadline <= now:
                        self._silent(name, peer, lan_name)
                    else:
                        wake = min(wake, deadline)
            if self._news:
                self._news = False
                self._to_module(self.on_change)
            await asyncio.sleep(wake - now)

    def _read(self) -> None:
        """Every datagram waiting: they are read in batches rather than as each arrives,
        because on a large farm the wakeups, not the datagrams, are the cost."""
        for s in self._sockets:
            while True:
                batch = _dgram.recv_many(s.sock.fileno(), MAX_READ, READ_BATCH)
                for data, source in batch:
                    self.received(s.lan, data, source)
                if len(batch) < READ_BATCH:
                    break

    async def _send_loop(self) -> None:
        while True:
            due = self._armed + REARM_PULSES * self.pulse  # (news may have armed it meanwhile)
            if time.monotonic() >= due:
                self._arm()
            else:
                await asyncio.sleep(due - time.monotonic())

    def received(self, lan: Lan, data: bytes, source: str) -> None:
        try:
            beat, packed = decode_head(self.key, data)
            if beat.module != self.module:
                raise Rejected(f"for module {beat.module}")
            if lan.peers.get(beat.sender) != source:
                raise Rejected(f"claims to be {beat.sender}, whose address on LAN {lan.name} is not {source}")
            peer = self.peers[beat.sender]
            payload = peer.payload if packed == peer.packed else unpack_payload(packed)
        except Rejected as exc:
            self._rejected(lan, source, str(exc))
            return
        stamp = (beat.incarnation, beat.seq)
        if stamp > peer.challenge_from:
            peer.challenge_from = stamp
            if beat.nonce != peer.challenge:
                peer.challenge = beat.nonce
                self._answer = True  # (at the batch's end: the peer hears this node in one round trip)
        if beat.echo != self.nonce:
            # An empty echo: the peer has not heard this node yet.  Another challenge: one of
            # an earlier process of this node's, which the peer may still answer for a round
            # trip after this one started; after that, the datagram was recorded and replayed.
            if beat.echo and self.settled():
                self._rejected(lan, source, f"replayed (answers a challenge of an earlier {self.module} "
                               "process of this node)")
            return
        if stamp <= peer.seq.get(lan.name, (0, -1)):
            if beat.incarnation < peer.seq[lan.name][0]:
                self._rejected(lan, source, "replayed (older incarnation)")
            # Same incarnation, old seq: reordered or replayed; either way stale.
            return
        peer.seq[lan.name] = stamp
        now = time.monotonic()
        last = peer.heard.get(lan.name)
        if last is not None and lan.name in peer.up:
            peer.worst_gap[lan.name] = max(peer.worst_gap.get(lan.name, 0.0), now - last)
        peer.heard[lan.name] = now
        peer.up.add(lan.name)
        changed = False
        if stamp > peer.newest:
            peer.newest = stamp
            if packed != peer.packed:
                peer.packed, peer.payload = packed, payload
                changed = True
        if not peer.alive:
            peer.alive = True
            self._to_module(self.log, Level.EVENT, "heart", f"Peer {beat.sender} heard on LAN {lan.name}")
            changed = True
        if self._published.get(lan.name) is not True:
            self._publish_lan(lan)
        if changed:
            self._news = True

    def _rejected(self, lan: Lan, source: str, reason: str) -> None:
        line = self._reject_log(f"Heartbeat from {source} on LAN {lan.name} rejected: {reason}")
        if line is not None:
            self._to_module(self.log, Level.CRITICAL, "heart", line)

    # -- loss detection
    def _publish_lan(self, lan: Lan) -> None:
        now = time.monotonic()
        up = any(now - self.peers[p].heard.get(lan.name, -1e9) < self.timeout for p in lan.peers)
        # Only news: every datagram passes here, and each hand-over wakes the module's loop.
        if (up or self.settled()) and self._published.get(lan.name) != up:
            self._published[lan.name] = up
            self._to_module(self.resources.set, f"heartbeat.{lan.name}", "up" if up else "down")

    def _silent(self, name: str, peer: _Peer, lan_name: str) -> None:
        peer.up.discard(lan_name)
        self._publish_lan(self._lan_named[lan_name])
        if peer.alive and not peer.up:
            peer.alive = False
            silent = time.monotonic() - max(peer.heard.values())
            self._to_module(self.log, Level.EVENT, "heart",
                            f"Peer {name} lost: silent on every LAN for {silent:.2f} s")
            self._news = True

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(LATENESS_REPORT_S)
            self._report()

    def _report(self) -> None:
        """heart.late.<LAN>.<peer>: how much longer than a pulse the longest wait for the
        peer's next datagram on that LAN was since the last report (the silence so far
        included), in seconds; `lost` while the peer is not heard there.

        Datagrams are stamped when read, every tick, so a gap is known to a tick: the
        lateness is rounded down to whole ticks, and reads 0 on a healthy LAN instead of
        a noise that would write a row of history every report."""
        now = time.monotonic()
        for name, peer in self.peers.items():
            for lan in self.lans:
                heard = peer.heard.get(lan.name)
                if name not in lan.peers or heard is None:
                    continue  # never heard there: nothing to be late against
                if lan.name in peer.up:
                    gap = max(peer.worst_gap.pop(lan.name, 0.0), now - heard)
                    late = (max(0.0, gap - self.pulse) // self.tick) * self.tick
                    value = f"{late:.3f}"
                else:
                    peer.worst_gap.pop(lan.name, None)
                    value = "lost"
                self._to_module(self.resources.set, f"heart.late.{lan.name}.{name}", value)

    async def _settle(self) -> None:
        """LANs on which nobody was ever heard read down once a timeout has passed."""
        await asyncio.sleep(self.timeout)
        self._settled = True
        for lan in self.lans:
            self._publish_lan(lan)
