"""Incremental reintegration against a full sync, with raw hakit-rfs on a simulated
2-node cluster.

A data set (one large file, default 2 GiB, and a few 1 MiB files) is fully synced to an
empty secondary; then, --rounds times: the secondary stops (the primary detaches and
records what changes), 1 % of the data is rewritten with 4 KiB random writes through the
primary's mount, the secondary comes back and `resync` sends what was recorded.  Both
copies are compared after every sync, outside the timed part.  The link's raw TCP
throughput is measured in the same run, between the same two nodes.
Prints every figure and the ratios; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import harness
    from hakit.errors import HakitError
    from hakit.rfs.daemon import rfs_binary
    from hakit.testing.rfsctl import RfsControl
    from hakit.testing.sim import Sim
except ModuleNotFoundError as exc:
    sys.exit(
        f"error: cannot import {exc.name}: build hakit first ('make build') and run the bench "
        "with its Python: .venv/bin/python bench/reintegration.py (or 'make bench')"
    )

SIM_NAME = "hkbrei"
DIR = "/srv/bench"
CTL = "/var/lib/hakit/bench-rfs.ctl"
STATE = "/var/lib/hakit/bench-rfs-state"
LOG = "/var/log/hakit/bench-rfs.log"
RFS_PORT = 10300
LINK_PORT = 10301
TAG = 1
BIG = "big"
SMALL_FILES = 16
BLOCK = 4096
MIB = 1 << 20

# The random writes, run in node1 through the mount: distinct 4 KiB blocks of the large
# file, new random contents each, one fsync at the end.
WRITER = r"""
import os, random, sys
path, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
fd = os.open(path, os.O_WRONLY)
blocks = os.fstat(fd).st_size // 4096
for block in rnd.sample(range(blocks), count):
    os.pwrite(fd, rnd.randbytes(4096), block * 4096)
os.fsync(fd)
os.close(fd)
"""

# The link test: node2 receives `total` bytes and answers one byte; node1 times from its
# connect to that answer, so the time covers every byte having arrived.
RECEIVER = r"""
import socket, sys
addr, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
server = socket.create_server((addr, port))
print("ready", flush=True)
conn, _ = server.accept()
view, got = memoryview(bytearray(4 << 20)), 0
while got < total:
    n = conn.recv_into(view)
    if not n:
        sys.exit("the sender closed early")
    got += n
conn.sendall(b"k")
"""
SENDER = r"""
import socket, sys, time
addr, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = memoryview(bytes(4 << 20))
start = time.perf_counter()
conn = socket.create_connection((addr, port))
left = total
while left:
    n = min(left, len(chunk))
    conn.sendall(chunk[:n])
    left -= n
if conn.recv(1) != b"k":
    sys.exit("no answer from the receiver")
print(time.perf_counter() - start)
"""


class Rfs:
    """The raw hakit-rfs processes of the bench, one per node, each with its control
    connection and its log; whatever is still running at the end is stopped."""

    def __init__(self, sim: Sim, primary_options: tuple[str, ...] = ()) -> None:
        self.sim = sim
        self.primary_options = primary_options
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str, argv: list[str]) -> RfsControl:
        with open(self.sim.host_path(node, LOG), "ab") as log:
            self.procs[node] = self.sim.popen(node, [str(rfs_binary()), *argv, "--dir", DIR, "--ctl", CTL],
                                              stdout=log, stderr=subprocess.STDOUT)
        try:
            return RfsControl(self.sim.host_path(node, CTL))
        except OSError:
            raise HakitError(f"{node}: hakit-rfs did not open its control socket"
                             f"{self.log_tail(node)}") from None

    def primary(self) -> RfsControl:
        return self.start("node1", ["primary", "--state", STATE, *self.primary_options])

    def secondary(self) -> RfsControl:
        return self.start("node2", ["secondary", "--listen", f"{self.sim.addr('node2')}:{RFS_PORT}",
                                    "--insecure"])

    def stop(self, node: str, ctl: RfsControl) -> None:
        """A clean stop: unmounted, exit status 0."""
        proc = self.procs.pop(node)
        reply = ctl("stop")
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = None
        if reply != "ok" or status != 0:
            raise HakitError(f"{node}: stop answered {reply!r}, exit status {status}{self.log_tail(node)}")

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def log_tail(self, node: str) -> str:
        try:
            lines = self.sim.host_path(node, LOG).read_text(errors="replace").splitlines()[-3:]
        except OSError:
            return ""
        return f" (its log: {' | '.join(lines)})" if lines else ""

    def sync(self, ctl: RfsControl, node: str, command: str) -> dict[str, int]:
        """Run fullsync or resync; its reply's figures."""
        reply = ctl(command)
        if not reply.startswith("ok "):
            raise HakitError(f"`{command}` answered {reply!r}{self.log_tail(node)}")
        return {k: int(v) for k, v in (kv.split("=", 1) for kv in reply.split()[1:])}


def lay_data(root: Path, size_mib: int, files: int = SMALL_FILES) -> int:
    """The data set, written from the host into node1's real directory; its size."""
    with open(root / BIG, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(MIB))
    (root / "small").mkdir()
    for i in range(files):
        (root / "small" / f"f{i}").write_bytes(os.urandom(MIB))
    return (size_mib + files) * MIB


def digests(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            with open(path, "rb") as f:
                out[str(path.relative_to(root))] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def check_identical(sim: Sim, after: str) -> None:
    primary, secondary = (digests(sim.host_path(node, DIR)) for node in ("node1", "node2"))
    if primary != secondary:
        differ = sorted(p for p in primary.keys() | secondary.keys() if primary.get(p) != secondary.get(p))
        raise HakitError(f"after {after} the copies differ: {', '.join(differ[:5])}"
                         f"{' ...' if len(differ) > 5 else ''}")


def link_mb_s(sim: Sim, total: int) -> float:
    """node1 -> node2 over the LAN, plain TCP, one connection."""
    addr = sim.addr("node2")
    receiver = sim.popen("node2", ["python3", "-c", RECEIVER, addr, str(LINK_PORT), str(total)],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            raise HakitError("the link test's receiver did not start")
        run = sim.exec("node1", ["python3", "-c", SENDER, addr, str(LINK_PORT), str(total)], timeout=300)
        if receiver.wait(timeout=30) != 0:
            raise HakitError("the link test's receiver failed")
        return total / float(run.stdout) / 1e6
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()


@contextlib.contextmanager
def cluster() -> Iterator[Sim]:
    Sim.sweep_stale()  # a cluster left by a run killed outright
    sim = Sim(SIM_NAME)
    try:
        sim.up(nodes=2, daemon=False, paths=(DIR,), owner_pid=os.getpid())
        yield sim
    finally:
        if sim.exists():
            sim.down()


def bench(args: argparse.Namespace) -> dict[str, object]:
    with cluster() as sim, contextlib.closing(Rfs(sim, ("--nbrei", str(args.nbrei)))) as rfs:
        size = lay_data(sim.host_path("node1", DIR), args.size, args.files)
        writes = size // 100 // BLOCK
        links = [link_mb_s(sim, args.link_size * MIB) for _ in range(3)]
        link = statistics.median(links)
        print(f"link node1 -> node2 (TCP, {args.link_size} MiB, median of 3): {link:.0f} MB/s", flush=True)

        second = rfs.secondary()
        prim = rfs.primary()
        attach = f"attach {sim.addr('node2')} {RFS_PORT}"
        if (reply := prim(attach)) != "ok":
            raise HakitError(f"{attach}: {reply}")
        full = rfs.sync(prim, "node1", f"fullsync tag={TAG}")
        check_identical(sim, "the full sync")
        full_mb_s = full["bytes_sent"] / full["elapsed_ms"] * 1e3 / 1e6
        print(f"full sync of {size / MIB:.0f} MiB to an empty secondary: {full['elapsed_ms'] / 1e3:.2f} s, "
              f"{full['bytes_sent'] / MIB:.1f} MiB sent, {full_mb_s:.0f} MB/s "
              f"({full_mb_s / link:.2f} of the link)", flush=True)

        rounds = []
        for n in range(args.rounds):
            rfs.stop("node2", second)
            harness.wait_until(lambda: prim.stats()["attached"] == "0", 30,
                               lambda: "the primary to detach from the stopped secondary")
            started = time.monotonic()
            sim.exec("node1", ["python3", "-c", WRITER, f"{DIR}/{BIG}", str(writes), str(n)], timeout=600)
            wrote = time.monotonic() - started
            second = rfs.secondary()
            if (reply := prim(attach)) != "ok":
                raise HakitError(f"{attach}: {reply}")
            done = rfs.sync(prim, "node1", f"resync tag={TAG}")
            check_identical(sim, f"resync {n + 1}")
            rounds.append(done)
            print(f"round {n + 1}: {writes} random 4 KiB writes ({writes * BLOCK / MIB:.1f} MiB) "
                  f"in {wrote:.2f} s; resync {done['elapsed_ms'] / 1e3:.3f} s, "
                  f"{done['bytes_sent'] / MIB:.2f} MiB sent", flush=True)
        rfs.stop("node1", prim)
        rfs.stop("node2", second)

    resync_ms = statistics.median(r["elapsed_ms"] for r in rounds)
    resync_bytes = int(statistics.median(r["bytes_sent"] for r in rounds))
    return {
        "time_ratio": round(resync_ms / full["elapsed_ms"], 4),
        "bytes_ratio": round(resync_bytes / full["bytes_sent"], 4),
        "fullsync_mb_s": round(full_mb_s, 1),
        "link_mb_s": round(link, 1),
        "fullsync_over_link": round(full_mb_s / link, 3),
        "data_bytes": size,
        "written_bytes": writes * BLOCK,
        "fullsync_s": full["elapsed_ms"] / 1e3,
        "fullsync_bytes": full["bytes_sent"],
        "resync_s": resync_ms / 1e3,
        "resync_bytes": resync_bytes,
        "rounds": args.rounds,
        "nbrei": args.nbrei,
        "files": args.files,
        "resync_s_each": [r["elapsed_ms"] / 1e3 for r in rounds],
        "resync_bytes_each": [r["bytes_sent"] for r in rounds],
        "link_mb_s_each": [round(v, 1) for v in links],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="MiB of the large file (default 2048)")
    ap.add_argument("--rounds", type=int, default=3, help="write + resync rounds (default 3)")
    ap.add_argument("--link-size", type=int, default=1024, help="MiB sent by each link test (default 1024)")
    ap.add_argument("--files", type=int, default=SMALL_FILES,
                    help=f"1 MiB files beside the large one (default {SMALL_FILES})")
    ap.add_argument("--nbrei", type=int, default=3, help="threads synchronising files (default 3)")
    args = ap.parse_args()
    if min(args.size, args.rounds, args.link_size, args.nbrei) < 1 or args.files < 0:
        ap.error("--size, --rounds, --link-size and --nbrei must be at least 1")
    harness.guarded(harness.require, "bench/reintegration.py")
    result = harness.guarded(lambda: bench(args), "bench/reintegration.py")
    print(f"resync (median of {args.rounds}): {result['resync_s']:.3f} s, "
          f"{result['resync_bytes'] / MIB:.2f} MiB sent; against the full sync: "
          f"time {result['time_ratio']:.4f}, bytes {result['bytes_ratio']:.4f} (targets 0.03)")
    print(f"full sync {result['fullsync_mb_s']:.0f} MB/s, link {result['link_mb_s']:.0f} MB/s, "
          f"full sync / link {result['fullsync_over_link']:.2f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
