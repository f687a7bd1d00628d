"""What the benchmarks share: a simulated cluster that never outlives the run, a tiny TCP
service on every node, and a client that probes an address every few milliseconds.

The client runs on the host, which reaches every LAN through the simulator's bridges, so
that it sees a failover exactly as a client on the LAN would: through its own ARP cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from hakit.errors import HakitError
from hakit.testing.sim import Sim

SIM_NAME = "bench"
SERVICE_PORT = 7711
PROBE_INTERVAL = 0.01
# Longer than any answer from a live node on a bridge, shorter than TCP's first SYN
# retransmission (1 s): an attempt lost in the failover fails instead of succeeding late.
PROBE_TIMEOUT = 0.5

# Answers each connection with the name of the node (its UTS host name), then closes.
SERVICE = r"""
import asyncio, socket, sys

NAME = (socket.gethostname() + "\n").encode()


async def answer(reader, writer):
    try:
        await reader.readline()
        writer.write(NAME)
        await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(answer, "0.0.0.0", int(sys.argv[1]), reuse_address=True)
    await server.serve_forever()


asyncio.run(main())
"""


def require(root: bool = True, commands: tuple[str, ...] = ()) -> None:
    """Refuse to start, with the reason, rather than fail half-way."""
    if root and os.geteuid() != 0:
        raise HakitError("the benchmark needs root: it builds a simulated cluster (namespaces, bridges)")
    for cmd in commands:
        if shutil.which(cmd) is None:
            raise HakitError(f"{cmd} is not installed (Debian: apt-get install {cmd}; or run 'make bench')")


@contextlib.contextmanager
def simulated_cluster(nodes: int) -> Iterator[Sim]:
    """A started cluster, removed at the end whatever happens (exception, Ctrl-C, SIGTERM)."""
    # A bench killed with SIGKILL leaves its cluster behind; the next run removes it.
    Sim.sweep_stale()
    sim = Sim(SIM_NAME)

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        sim.up(nodes, lans=1, daemon=True, owner_pid=os.getpid())
        yield sim
    finally:
        # The removal must not be cut short by a second Ctrl-C.
        with _signals_ignored():
            if sim.exists():
                sim.down()
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class NodeProcesses:
    """Long-running processes started in nodes, one per node, stopped by their pid."""

    STOP_TIMEOUT = 10.0

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str, argv: list[str], log: Path | None = None) -> None:
        self.reap(node)
        with open(log or os.devnull, "ab") as out:
            self.procs[node] = self.sim.popen(node, argv, stdout=out, stderr=subprocess.STDOUT)

    def reap(self, node: str) -> None:
        """Forget node's process once a node kill has ended it."""
        proc = self.procs.pop(node, None)
        if proc is not None:
            proc.kill()  # a no-op on the dead process, unless the kill has not happened
            proc.wait()

    def stop(self) -> None:
        """SIGTERM, so that each cleans up after itself (keepalived removes its VIP)."""
        procs, self.procs = self.procs, {}
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# The tiny TCP service: on every node, and again on a revived one.
SERVICE_ARGV = [sys.executable, "-c", SERVICE, str(SERVICE_PORT)]


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the answer arrived
    node: str


class Prober:
    """A client connecting to addr every PROBE_INTERVAL, each attempt on its own, so that
    a stuck attempt delays none of the next ones; it keeps every answer."""

    def __init__(self, addr: str, port: int = SERVICE_PORT) -> None:
        self.addr = addr
        self.port = port
        self.answers: list[Answer] = []  # appended by the probing thread only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"probe {addr}", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        asyncio.run(self._probe_loop())

    async def _probe_loop(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        due = time.monotonic()
        while not self._stop.is_set():
            task = asyncio.create_task(self._attempt())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += PROBE_INTERVAL
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _attempt(self) -> None:
        writer = None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                reader, writer = await asyncio.open_connection(self.addr, self.port)
                writer.write(b"probe\n")
                line = await reader.readline()
            if line.endswith(b"\n"):
                self.answers.append(Answer(time.monotonic(), line.decode(errors="replace").strip()))
        except (OSError, TimeoutError):
            pass
        finally:
            if writer is not None:
                writer.close()

    def served_by(self, node: str, span: float = 0.1) -> bool:
        """Every answer of the last `span` seconds came from node, and there were some."""
        now = time.monotonic()
        recent = [a for a in self.answers[-int(4 * span / PROBE_INTERVAL):] if a.at > now - span]
        return len(recent) >= span / PROBE_INTERVAL / 2 and all(a.node == node for a in recent)

    def outage(self, old: str, new: str, crash_at: float, timeout: float) -> float | None:
        """Seconds between old's last answer and new's first after the crash; None if new
        has not answered within timeout."""
        deadline = crash_at + timeout
        while time.monotonic() < deadline:
            answers = list(self.answers)
            first_new = next((a.at for a in answers if a.node == new and a.at > crash_at), None)
            if first_new is not None:
                before = (a.at for a in answers if a.node == old and a.at < first_new)
                return first_new - max(before, default=crash_at)
            time.sleep(PROBE_INTERVAL)
        return None


def wait_until(check: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    """Poll check; after timeout, HakitError saying what was awaited (what() is called then)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise HakitError(f"timed out after {timeout:g}s waiting for {what()}")
        time.sleep(0.05)


def median(values: list[float | None]) -> float | None:
    done = [v for v in values if v is not None]
    return statistics.median(done) if done else None
