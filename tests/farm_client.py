"""The clients of the farm tests, run on a client node.  Each prints one JSON object.

    connect VIP PORT COUNT [SOURCE,...]   COUNT connections (from each SOURCE address):
                                          {"nodes": {source: [node per connection]}, "failed": n}
    udp VIP PORT COUNT SIZE [SOCKETS]     COUNT datagrams of SIZE bytes from SOCKETS (1) connected sockets:
                                          {"nodes": {node: n}, "sizes": [...], "lost": n}
    hold VIP PORT COUNT SECONDS           COUNT connections kept open, each asked every 100 ms:
                                          {"first": [node], "last": [node], "broken": n}
    owners VIP PORT FIRST COUNT           one connection from each source port FIRST.., ended by a reset
                                          (no time-wait stays on either side): {"nodes": {sport: node}}
    reuse VIP PORT COUNT SPORT            COUNT connections one after the other from source port SPORT,
                                          each closed by the server first: {"nodes": [node], "failed": n}
    until VIP PORT SECONDS                rounds of 50 simultaneous new connections until a whole
                                          round answers: {"elapsed": s} (None: never within SECONDS)
"""

import asyncio
import contextlib
import json
import socket
import struct
import sys
import time

TIMEOUT = 2.0


def ask(sock: socket.socket) -> str:
    sock.sendall(b"?\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(100)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.decode().strip()


def once(vip: str, port: int, source: str | None = None, timeout: float = TIMEOUT) -> str:
    with socket.socket() as s:
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect((vip, port))
        return ask(s)


def connect(vip: str, port: int, count: int, sources: list[str]) -> dict:
    nodes: dict[str, list[str]] = {}
    failed = 0
    for src in sources or [""]:
        got = nodes.setdefault(src or "-", [])
        for _ in range(count):
            try:
                got.append(once(vip, port, src or None))
            except OSError:
                failed += 1
    return {"nodes": nodes, "failed": failed}


def udp(vip: str, port: int, count: int, size: int, nsocks: int) -> dict:
    nodes: dict[str, int] = {}
    sizes: set[int] = set()
    lost = 0
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(nsocks)]
    for s in socks:
        s.settimeout(TIMEOUT)
        s.connect((vip, port))  # connected: Linux varies the IP id (unconnected DF datagrams get 0)
    with contextlib.ExitStack() as closing:
        for s in socks:
            closing.enter_context(s)
        for i in range(count):
            s = socks[i % nsocks]
            s.send(b"x" * size)
            try:
                name, length = s.recv(200).decode().split()
            except OSError:
                lost += 1
                continue
            nodes[name] = nodes.get(name, 0) + 1
            sizes.add(int(length))
    return {"nodes": nodes, "sizes": sorted(sizes), "lost": lost}


def hold(vip: str, port: int, count: int, seconds: float) -> dict:
    socks, first = [], []
    for _ in range(count):
        s = socket.create_connection((vip, port), timeout=TIMEOUT)
        socks.append(s)
        first.append(ask(s))
    print(json.dumps({"ready": True}), flush=True)
    last = list(first)
    errors: dict[int, str] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, s in enumerate(socks):
            if i in errors:
                continue
            try:
                last[i] = ask(s)
            except OSError as exc:
                errors[i] = f"{first[i]}: {exc!r} after {seconds - (end - time.monotonic()):.1f} s"
        time.sleep(0.1)
    for s in socks:
        s.close()
    return {"first": first, "last": last, "broken": len(errors), "errors": list(errors.values())}


def owners(vip: str, port: int, first: int, count: int) -> dict:
    nodes: dict[int, str | None] = {}
    for sport in range(first, first + count):
        with socket.socket() as s:
            s.settimeout(TIMEOUT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.bind(("", sport))
            try:
                s.connect((vip, port))
                nodes[sport] = ask(s)
            except OSError:
                nodes[sport] = None
    return {"nodes": nodes}


def reuse(vip: str, port: int, count: int, sport: int) -> dict:
    nodes: list[str] = []
    failed = 0
    for _ in range(count):
        try:
            with socket.socket() as s:
                s.settimeout(TIMEOUT)  # (a first SYN answered otherwise is retransmitted within it)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("", sport))
                s.connect((vip, port))
                s.sendall(b"bye\n")
                nodes.append(s.makefile().readline().strip())
                # The server's FIN arrives and is acknowledged before this side closes:
                # the server's side waits for this FIN in time-wait.
                time.sleep(0.2)
        except OSError:
            failed += 1
    return {"nodes": nodes, "failed": failed}


def until(vip: str, port: int, seconds: float) -> dict:
    async def one() -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(vip, port), 0.3)
            writer.write(b"?\n")
            ok = bool(await asyncio.wait_for(reader.readline(), 0.3))
            writer.close()
            return ok
        except (TimeoutError, OSError):
            return False

    async def rounds() -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if all(await asyncio.gather(*(one() for _ in range(50)))):
                return time.monotonic() - start
            await asyncio.sleep(0.02)
        return None

    return {"elapsed": asyncio.run(rounds())}


def main() -> None:
    verb, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rest = sys.argv[4:]
    if verb == "connect":
        out = connect(vip, port, int(rest[0]), rest[1].split(",") if len(rest) > 1 else [])
    elif verb == "udp":
        out = udp(vip, port, int(rest[0]), int(rest[1]), int(rest[2]) if len(rest) > 2 else 1)
    elif verb == "hold":
        out = hold(vip, port, int(rest[0]), float(rest[1]))
    elif verb == "owners":
        out = owners(vip, port, int(rest[0]), int(rest[1]))
    elif verb == "reuse":
        out = reuse(vip, port, int(rest[0]), int(rest[1]))
    else:
        out = until(vip, port, float(rest[0]))
    print(json.dumps(out), flush=True)


main()
