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
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from hakit.config.safe_archive import pack
from hakit.errors import HakitError
from hakit.testing.sim import Sim

T = TypeVar("T")

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
def simulated_cluster(nodes: int, name: str = SIM_NAME, daemon: bool = True,
                      paths: Sequence[str] = ()) -> Iterator[Sim]:
    """A started cluster, removed at the end whatever happens (exception, Ctrl-C, SIGTERM).
    daemon and paths: as Sim.up's."""
    # A bench killed with SIGKILL leaves its cluster behind; the next run removes it.
    Sim.sweep_stale()
    sim = Sim(name)

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        sim.up(nodes, lans=1, daemon=daemon, paths=paths, owner_pid=os.getpid())
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


def farm_archive(workdir: Path, name: str, vip: str, delivery: str,
                 groups: Mapping[str, Sequence[tuple[int, str, str]]], files: Mapping[str, str],
                 hook: str | None = None) -> Path:
    """A farm module's .safe: one VIP on the default LAN, delivered as `delivery`
    (vmac_directed, vmac_invisible), each group's rules as (port, proto, filter), and
    `files` in its bin/ (start_both, stop_both, what they run), all executable."""
    src = workdir / name
    (src / "conf").mkdir(parents=True)
    (src / "bin").mkdir()
    rules = "".join(
        f'        <group name="{group}">'
        + "".join(f'<rule port="{port}" proto="{proto}" filter="{how}"/>' for port, proto, how in rules_of)
        + "</group>\n"
        for group, rules_of in groups.items()
    )
    hooked = f' hook="{hook}"' if hook else ""
    (src / "conf" / "userconfig.xml").write_text(
        '<safe>\n  <service mode="farm">\n'
        '    <farm><lan name="default"/></farm>\n'
        "    <vip>\n"
        "      <interface_list><interface>\n"
        f'        <virtual_interface type="{delivery}"{hooked}>\n'
        f'          <virtual_addr addr="{vip}" where="alias"/>\n'
        "        </virtual_interface>\n"
        "      </interface></interface_list>\n"
        "      <loadbalancing_list>\n"
        f"{rules}"
        "      </loadbalancing_list>\n"
        "    </vip>\n"
        # Without <user>, no script runs.
        "    <user/>\n"
        "  </service>\n</safe>\n"
    )
    for fname, body in files.items():
        path = src / "bin" / fname
        path.write_text(body)
        path.chmod(0o755)
    out = workdir / f"{name}.safe"
    pack(src, out)
    return out


# The tiny TCP service: on every node, and again on a revived one.
SERVICE_ARGV = [sys.executable, "-c", SERVICE, str(SERVICE_PORT)]


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the answer arrived
    node: str


@dataclass(frozen=True)
class Attempt:
    at: float  # time.monotonic() when the attempt began
    node: str | None  # who answered; None: nobody within the attempt's limit
    port: int | None  # the source port asked for; None: the kernel's choice


class PortBusy(Exception):
    """The source port asked for is taken on this host: no attempt was made."""


async def ask_name(addr: str, port: int = SERVICE_PORT, source_port: int | None = None,
                   timeout: float = PROBE_TIMEOUT) -> str | None:
    """One new connection to the service: the name of the node that answered, None if none
    did within timeout.

    From source_port when given (a known flow, for a farm's hash), ended with a reset: the
    next connection of the same four-tuple must not meet a TIME_WAIT on either side.
    """
    sock: socket.socket | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            if source_port is None:
                reader, writer = await asyncio.open_connection(addr, port)
            else:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                try:
                    sock.bind(("0.0.0.0", source_port))
                except OSError:
                    raise PortBusy(source_port) from None
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, (addr, port))
                reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"probe\n")
            line = await reader.readline()
        return line.decode(errors="replace").strip() if line.endswith(b"\n") else None
    except (OSError, TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
        elif sock is not None:
            sock.close()


class Prober:
    """A client connecting to addr every PROBE_INTERVAL, each attempt on its own, so that
    a stuck attempt delays none of the next ones; it keeps every answer, and every
    attempt with its outcome.

    source_port, when given, is asked before each attempt for the port to connect from
    (None: the kernel's choice); an attempt whose port is still in use by an earlier one
    is not made.
    """

    def __init__(self, addr: str, port: int = SERVICE_PORT,
                 source_port: Callable[[], int | None] | None = None) -> None:
        self.addr = addr
        self.port = port
        self.source_port = source_port
        self.answers: list[Answer] = []  # appended by the probing thread only
        self.attempts: list[Attempt] = []  # in the order they ended; the same thread
        self._ports_in_use: set[int] = set()
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
            source = self.source_port() if self.source_port is not None else None
            if source is None or source not in self._ports_in_use:
                task = asyncio.create_task(self._attempt(source))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            due += PROBE_INTERVAL
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _attempt(self, source: int | None) -> None:
        began = time.monotonic()
        if source is not None:
            self._ports_in_use.add(source)
        try:
            node = await ask_name(self.addr, self.port, source)
        except PortBusy:
            return
        finally:
            if source is not None:
                self._ports_in_use.discard(source)
        if node is not None:
            self.answers.append(Answer(time.monotonic(), node))
        self.attempts.append(Attempt(began, node, source))

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


def guarded(run: Callable[[], T], prefix: str = "error") -> T:
    """run() as a bench's main runs it: an error in one line (exit 1), Ctrl-C said as such
    (exit 130); the simulated cluster is removed either way by its context manager."""
    try:
        return run()
    except HakitError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted; the simulated cluster was removed", file=sys.stderr)
        raise SystemExit(130) from None


def wait_until(check: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    """Poll check; after timeout, HakitError saying what was awaited (what() is called then)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise HakitError(f"timed out after {timeout:g}s waiting for {what()}")
        time.sleep(0.05)


def wait_listening(addr: str, port: int, timeout: float = 20.0) -> None:
    """The host reaches every node: connect from here until addr:port accepts."""

    def accepts() -> bool:
        try:
            socket.create_connection((addr, port), timeout=0.5).close()
        except OSError:
            return False
        return True

    wait_until(accepts, timeout, lambda: f"{addr}:{port} to accept connections")


def median(values: list[float | None]) -> float | None:
    done = [v for v in values if v is not None]
    return statistics.median(done) if done else None
