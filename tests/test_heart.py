"""The heartbeats in their own thread: two modules' hearts on this host's loopback,
real UDP, while the module's event loop is kept busy on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import time
from pathlib import Path

import pytest
import uvloop

from hakit import _dgram
from hakit.heart.link import PACED_PULSES, REARM_PULSES, Heart, Lan
from hakit.heart.protocol import Beat, decode, decode_head, encode, encode_for, pack_payload
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.store.module_store import ModuleStore
from tests.leaks import run_loop

KEY = b"k" * 32
PORT = 9391


def heart(store: ModuleStore, me: str, addr: str, peer: str, peer_addr: str, changes: list[str]) -> Heart:
    return Heart(module="am", node=me, key=KEY, port=PORT, pulse=0.1, timeout=0.3,
                 lans=[Lan("default", addr, {peer: peer_addr})], incarnation=1, resources=Resources(store),
                 log=ModuleLog("am", store), on_change=lambda: changes.append(me))


def test_a_busy_module_loop_does_not_make_its_peer_lost(tmp_path: Path):
    """2 s of computation on the module's loop (as a bucket table or a burst of work
    would take): before, the heart waited behind it and each side declared the other
    lost after 0.3 s; now neither is lost and news still arrive afterwards."""
    stores = [ModuleStore(tmp_path / "n1.db"), ModuleStore(tmp_path / "n2.db")]
    changes: list[str] = []

    async def scenario() -> None:
        h1 = heart(stores[0], "n1", "127.0.0.1", "n2", "127.0.0.2", changes)
        h2 = heart(stores[1], "n2", "127.0.0.2", "n1", "127.0.0.1", changes)
        await h1.start()
        await h2.start()
        try:
            deadline = time.monotonic() + 5
            while not (h1.peer("n2") is not None and h2.peer("n1") is not None):
                assert time.monotonic() < deadline, "the hearts never heard each other"
                await asyncio.sleep(0.02)
            h1.update({"state": "UP"})
            busy_until = time.monotonic() + 2.0
            while time.monotonic() < busy_until:
                sum(range(1000))  # no await: the module's loop runs nothing else meanwhile
            assert h1.peer("n2") is not None and h2.peer("n1") is not None
            await asyncio.sleep(0.3)  # what the hearts handed to the module's loop runs now
            assert h2.peer("n1") == {"state": "UP"}
        finally:
            await h1.stop({"state": "STOP"})
            await h2.stop({"state": "STOP"})

    run_loop(scenario(), loop_factory=uvloop.new_event_loop)
    for store in stores:
        log = [line.message for line in store.logs()]
        assert any("heard on LAN default" in m for m in log), log
        assert not any("lost" in m for m in log), log
        assert store.resource("heartbeat.default").value == "up"
        store.close()
    assert {"n1", "n2"} <= set(changes)


def test_a_busy_module_loop_does_not_slow_the_pulses_to_31_peers(tmp_path: Path):
    """The heart's socket calls give up the GIL, and each took it back from the busy
    module loop only after the switch interval: a pulse to 31 peers took some 200 ms
    instead of a few, so they heard this node at about half its pace.  Each peer here is a
    plain socket that counts what arrives during 2 s of computation on the module's loop."""
    store = ModuleStore(tmp_path / "n.db")
    pulse, busy = 0.1, 2.0
    names = {f"p{i:02d}": f"127.0.0.{i}" for i in range(2, 33)}
    listeners = []
    for addr in names.values():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((addr, PORT))
        sock.setblocking(False)
        listeners.append(sock)

    def drain(sock: socket.socket) -> int:
        n = 0
        with contextlib.suppress(BlockingIOError):
            while sock.recv(4096):
                n += 1
        return n

    async def scenario() -> list[int]:
        h = Heart(module="am", node="n1", key=KEY, port=PORT, pulse=pulse, timeout=3 * pulse,
                  lans=[Lan("default", "127.0.0.1", names)], incarnation=1, resources=Resources(store),
                  log=ModuleLog("am", store), on_change=lambda: None)
        await h.start()
        try:
            await asyncio.sleep(2 * pulse)
            for sock in listeners:
                drain(sock)
            busy_until = time.monotonic() + busy
            while time.monotonic() < busy_until:
                sum(range(1000))  # no await: the module's loop runs nothing else meanwhile
            return [drain(sock) for sock in listeners]
        finally:
            await h.close()

    try:
        heard = run_loop(scenario(), loop_factory=uvloop.new_event_loop)
    finally:
        for sock in listeners:
            sock.close()
        store.close()
    # 20 pulses in 2 s; a few may go late on a loaded machine, not half of them.
    assert min(heard) >= 0.75 * busy / pulse, heard


def test_pulses_go_on_while_the_gil_is_held(tmp_path: Path):
    """The module's loop in one long C call that keeps the GIL (here a sort; on a loaded
    machine, a loop that lost its CPU while holding it): the heart's thread cannot run,
    and its peers took it for lost.  The pulses it encoded ahead still go out, one every
    pulse, authenticated and each newer than the last: a peer counts them as heard."""
    store = ModuleStore(tmp_path / "n.db")
    pulse = 0.1
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.2", PORT))

    async def scenario() -> tuple[float, list[Beat]]:
        h = heart(store, "n1", "127.0.0.1", "n2", "127.0.0.2", [])
        h.pulse = pulse
        await h.start()
        try:
            h.update({"state": "UP"})
            await asyncio.sleep(3 * pulse)
            numbers = [random.random() for _ in range(6_000_000)]
            _dgram.recv_many(rx.fileno(), 2048, 64)
            began = time.monotonic()
            numbers.sort()  # the GIL held throughout: no Python runs elsewhere meanwhile
            held = time.monotonic() - began
            return held, [decode(KEY, data) for data, _ in _dgram.recv_many(rx.fileno(), 2048, 64)]
        finally:
            await h.close()

    try:
        held, beats = run_loop(scenario(), loop_factory=uvloop.new_event_loop)
    finally:
        rx.close()
        store.close()
    assert held > 1.0, f"the sort held the GIL only {held:.2f} s: make it longer"
    # One a pulse, of the PACED_PULSES the heart's thread encoded at its last turn, up to
    # REARM_PULSES before the hold.
    assert PACED_PULSES - REARM_PULSES >= 4 and len(beats) >= 4, (held, beats)
    seqs = [b.seq for b in beats]
    assert seqs == sorted(set(seqs)) and all(b.payload == {"state": "UP"} for b in beats)


def test_the_pacer_sends_its_rounds_in_time_and_the_reader_reads_them_whole():
    """hakit._dgram, the heart's socket calls.  The pacer sends a round at once and the
    next ones a period apart, on every socket of the round, until a new arm replaces
    them; a peer that does not listen loses only its own.  The reader returns what waits
    with its source, a datagram longer than its buffer cut (its tag then fails), nothing
    when nothing waits."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx2:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        tx.bind(("127.0.0.3", 0))
        tx2.bind(("127.0.0.4", 0))
        pacer = _dgram.Pacer()
        try:
            sent = [bytes([i]) * (i + 1) for i in range(100)]
            pacer.arm(10.0, port, [[(tx.fileno(), d, "127.0.0.1") for d in sent]])
            time.sleep(0.2)
            got = _dgram.recv_many(rx.fileno(), 64, 64) + _dgram.recv_many(rx.fileno(), 64, 64)
            assert [d for d, _ in got] == [d[:64] for d in sent]
            assert {source for _, source in got} == {"127.0.0.3"}
            assert _dgram.recv_many(rx.fileno(), 64, 64) == []
            # Nobody on 127.0.0.2: its datagrams go nowhere, the others' still arrive.
            mixed = [(tx.fileno(), b"a", "127.0.0.2"), (tx.fileno(), b"b", "127.0.0.1"),
                     (tx2.fileno(), b"c", "127.0.0.2"), (tx2.fileno(), b"d", "127.0.0.1")]
            later = [[(tx.fileno(), data, "127.0.0.1")] for data in (b"e", b"f")]
            pacer.arm(0.3, port, [mixed, *later])
            time.sleep(0.15)
            assert _dgram.recv_many(rx.fileno(), 64, 64) == [(b"b", "127.0.0.3"), (b"d", "127.0.0.4")]
            time.sleep(0.3)
            assert _dgram.recv_many(rx.fileno(), 64, 64) == [(b"e", "127.0.0.3")]
            pacer.arm(0.3, port, [])  # "f" is not sent
            time.sleep(0.35)
            assert _dgram.recv_many(rx.fileno(), 64, 64) == []
            with pytest.raises(ValueError, match="not an IPv4 address: 'node2'"):
                pacer.arm(0.3, port, [[(tx.fileno(), b"x", "node2")]])
        finally:
            pacer.close()


def _farm_beat() -> tuple[Beat, bytes]:
    """A farm member's heartbeat at 32 nodes: the largest payload a module sends."""
    view = [f"node{i:02d}" for i in range(1, 33)]
    payload = {"state": "UP", "status": "Ready", "role": "", "gen": 0, "since": 1.7e9, "yield": False,
               "swap": False, "rfs_epoch": 0, "synced": 0, "base": 0, "fullsync": False, "outdate": 0,
               "leaving": False, "sync": {},
               "lb": {"open": True, "since": 1.7e9, "mac": "02" * 6, "view": view}}
    beat = Beat("farm", "node01", 7, 1234, b"n" * 16, b"e" * 16, payload)
    return beat, pack_payload(payload)


def test_encoding_a_pulse_for_31_peers(benchmark):
    """What a sender of a 32-node farm does every pulse: one datagram per peer, what
    they share packed and hashed once."""
    beat, packed = _farm_beat()
    echoes = [bytes([i]) * 16 for i in range(31)]
    datagrams = benchmark(encode_for, KEY, beat, echoes, packed)
    assert datagrams[5] == encode(KEY, dataclasses.replace(beat, echo=echoes[5]))
    assert decode(KEY, datagrams[5]) == dataclasses.replace(beat, echo=echoes[5])


def test_verifying_a_heartbeat(benchmark):
    """What each peer costs a receiver per pulse: tag, the fields, the payload left packed
    (it is unpacked only when it changed)."""
    beat, packed = _farm_beat()
    head, payload = benchmark(decode_head, KEY, encode(KEY, beat))
    assert payload == packed and head == dataclasses.replace(beat, payload={})


def test_lateness_is_reported_in_whole_ticks_and_lost_once_the_peer_is(tmp_path: Path, monkeypatch):
    """heart.late.<LAN>.<peer>: 0 on a healthy link (the read tick's jitter is not lateness),
    a wait longer than a pulse by whole ticks, `lost` once the peer is silent."""
    from hakit.heart import link

    monkeypatch.setattr(link, "LATENESS_REPORT_S", 0.3)
    stores = [ModuleStore(tmp_path / "n1.db"), ModuleStore(tmp_path / "n2.db")]

    def late() -> str | None:
        r = stores[0].resource("heart.late.default.n2")
        return r.value if r else None

    async def scenario() -> None:
        h1 = heart(stores[0], "n1", "127.0.0.1", "n2", "127.0.0.2", [])
        h2 = heart(stores[1], "n2", "127.0.0.2", "n1", "127.0.0.1", [])
        await h1.start()
        await h2.start()
        try:
            deadline = time.monotonic() + 5
            while h1.peer("n2") is None or late() is None:
                assert time.monotonic() < deadline, "no lateness reported"
                await asyncio.sleep(0.05)
            assert late() == "0.000"
            # A wait of 0.21 s for a pulse of 0.1 s: 0.11 s late, reported as 4 ticks of 0.025 s.
            assert h1._loop is not None
            h1._loop.call_soon_threadsafe(h1.peers["n2"].worst_gap.__setitem__, "default", 0.21)
            await asyncio.sleep(0.4)
            assert late() == "0.100"
            await h2.stop({"state": "STOP"})
            await asyncio.sleep(0.8)  # the timeout, then a report
            assert late() == "lost"
        finally:
            await h1.stop({"state": "STOP"})
            await h2.close()

    run_loop(scenario(), loop_factory=uvloop.new_event_loop)
    for store in stores:
        store.close()
