"""What the mirror costs a database: pgbench TPC-B (PostgreSQL) on a simulated 2-node cluster.

The paths of datapath.py, side by side in one run: (a) the plain directory of node1,
(b) hakit-rfs's FUSE layer alone, (c) the mirror with node2 attached (TLS, writes="buffered",
the default), (s) the same mirror with writes="applied", (d) GlusterFS replica 2.
The database (pgbench -i -s SCALE) is made once, on a plain directory of node1; each run
copies it into the directory under test (for c and s into both nodes' copies, as a full
synchronisation leaves them), starts postgres on it (user postgres, its unix socket in a
private directory, no TCP) and runs pgbench -c 8 -j 2 -T SECONDS.  Each figure is the
median of --runs runs; the paths take turns.  Prints every figure and the ratios; the last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import datapath
    import harness
    from datapath import DIR, GLUSTER_MNT, measure
    from hakit.errors import HakitError
    from hakit.testing.sim import Sim
except ModuleNotFoundError as exc:
    sys.exit(f"error: cannot import {exc.name}: build hakit first ('make build') and run the bench "
             "with its Python: .venv/bin/python bench/database.py (or 'make bench')")

PATHS = "abcsd"
TEMPLATE = "/srv/hkpg"  # node1: the database made once, copied into each directory under test
PGPORT = "5432"  # names the socket only: it is in a private directory, and there is no TCP
AS_POSTGRES = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)$", re.MULTILINE)


def pg_bin() -> Path:
    """The newest installed PostgreSQL's programs (Debian keeps them off PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise HakitError("PostgreSQL is not installed (make bench installs Debian's postgresql)")
    return found[-1].parent


class Postgres:
    """postgres run in node1 by its pid, on one data directory, and pgbench against it."""

    def __init__(self, sim: Sim, bindir: Path, socket_dir: Path) -> None:
        self.sim, self.bindir, self.socket_dir = sim, bindir, socket_dir
        self.log = socket_dir / "postgres.log"

    def run(self, program: str, *argv: str, timeout: float = 600) -> str:
        return self.sim.exec("node1", [*AS_POSTGRES, str(self.bindir / program), *argv],
                             timeout=timeout).stdout

    def client(self, program: str, *argv: str, timeout: float = 600) -> str:
        return self.run(program, "-h", str(self.socket_dir), "-p", PGPORT, *argv, timeout=timeout)

    @contextlib.contextmanager
    def serving(self, pgdata: str, stop_signal: int = signal.SIGQUIT) -> Iterator[None]:
        """postgres up on pgdata; stopped by its pid at the end (SIGQUIT: immediate, the
        runs need no shutdown checkpoint; SIGINT: fast, a clean copy)."""
        with self.log.open("ab") as log:
            argv = [str(self.bindir / "postgres"), "-D", pgdata, "-k", str(self.socket_dir), "-p", PGPORT,
                    "-c", "listen_addresses="]
            proc = self.sim.popen("node1", [*AS_POSTGRES, *argv], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60
            while self.sim.exec("node1", [str(self.bindir / "pg_isready"), "-q", "-h", str(self.socket_dir),
                                          "-p", PGPORT], check=False).returncode != 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log.read_text(errors="replace").strip().splitlines()[-1:]
                    raise HakitError(f"postgres did not start on {pgdata}: {' '.join(tail) or 'no log'}")
                time.sleep(0.1)
            yield
        finally:
            datapath.stop([proc], stop_signal, timeout=60)

    def pgbench(self, seconds: int) -> float:
        out = self.client("pgbench", "-c", "8", "-j", "2", "-T", str(seconds), "postgres",
                          timeout=seconds + 300)
        found = TPS.search(out)
        if found is None:
            raise HakitError(f"pgbench printed no tps: {out.strip()[-200:]}")
        return float(found.group(1))


def make_template(pg: Postgres, scale: int) -> None:
    sim = pg.sim
    pgdata = f"{TEMPLATE}/pg"
    sim.exec("node1", ["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "700", pgdata])
    pg.run("initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "-N")
    with pg.serving(pgdata, signal.SIGINT):
        pg.client("pgbench", "-i", "-q", "-s", str(scale), "postgres")


def copy_template(sim: Sim, target: str, nodes: tuple[str, ...]) -> None:
    """The template into `target`/pg, owner and modes kept, as node1 sees `target` (through
    the GlusterFS mount), or straight into the real directory of each of `nodes`."""
    if not nodes:
        sim.exec("node1", ["cp", "-a", f"{TEMPLATE}/pg", f"{target}/pg"], timeout=600)
    for node in nodes:
        subprocess.run(["cp", "-a", str(sim.host_path("node1", f"{TEMPLATE}/pg")),
                        str(sim.host_path(node, f"{target}/pg"))], check=True)
    # Written back now rather than during the run, where it would slow the fsyncs measured.
    os.sync()


def run_once(sim: Sim, path: str, pg: Postgres, seconds: int) -> dict[str, float]:
    if path == "d":
        datapath.empty_gluster(sim)
        copy_template(sim, GLUSTER_MNT, ())
        with pg.serving(f"{GLUSTER_MNT}/pg"):
            return {"tps": pg.pgbench(seconds)}
    datapath.empty(sim, DIR)
    copy_template(sim, DIR, ("node1", "node2") if path in datapath.MIRRORS else ("node1",))
    with contextlib.ExitStack() as stack:
        if path != "a":
            stack.enter_context(datapath.rfs(sim, path))
        stack.enter_context(pg.serving(f"{DIR}/pg"))
        return {"tps": pg.pgbench(seconds)}


NAMES = {"a": "plain", "b": "fuse alone", "c": "mirror", "s": "mirror applied", "d": "glusterfs"}


def report(tps: dict[str, float], *paths: str) -> None:
    """Each path's TPS and how the mirror's (both policies) compare with it."""
    for path in paths or tuple(tps):
        against = [f"{m}/{path} {tps[m] / tps[path]:.2f}" for m in "cs" if m in tps and m != path]
        print(f"{NAMES[path]:>15} ({path}): {tps[path]:8.1f} TPS" + (f"; {', '.join(against)}" if against
                                                                     else ""), flush=True)


def bench(args: argparse.Namespace) -> tuple[dict[str, float], str | None]:
    """TPS of each path asked for, and why GlusterFS did not run (None: it did)."""
    harness.require(commands=("setpriv",))
    bindir = pg_bin()
    paths = tuple(p for p in PATHS if p in args.only and p != "d")
    not_run = "not asked (--only)" if "d" not in args.only else datapath.gluster_missing()
    tps: dict[str, float] = {}
    socket_dir = Path(tempfile.mkdtemp(prefix="hkbench-pg-"))
    try:
        shutil.chown(socket_dir, user="postgres")
        with datapath.cluster("hkbdb", paths=(TEMPLATE,)) as sim:
            pg = Postgres(sim, bindir, socket_dir)
            started = time.monotonic()
            make_template(pg, args.scale)
            print(f"database made (scale {args.scale}) in {time.monotonic() - started:.0f} s", flush=True)
            once = functools.partial(run_once, sim, pg=pg, seconds=args.seconds)
            tps |= {p: f["tps"] for p, f in measure(paths, once, args.runs).items()}
            report(tps)
            if not_run is None:
                try:
                    with datapath.glusterfs(sim):
                        tps["d"] = measure(("d",), once, args.runs)["d"]["tps"]
                except HakitError as exc:
                    not_run = str(exc)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    return tps, not_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="median of this many runs per path (default 3)")
    ap.add_argument("--seconds", type=int, default=10, help="each pgbench run (default 10)")
    ap.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10: 1,000,000 accounts)")
    ap.add_argument("--only", default=PATHS, help=f"paths to run, among {PATHS} (default: all)")
    args = ap.parse_args()
    if unknown := set(args.only) - set(PATHS):
        ap.error(f"unknown path {sorted(unknown)[0]!r} in --only (choose among {PATHS})")
    if min(args.runs, args.seconds, args.scale) < 1:
        ap.error("--runs, --seconds and --scale must be at least 1")
    tps, not_run = harness.guarded(lambda: bench(args), "bench/database.py")
    if not_run is not None:
        print(f"GlusterFS: not run: {not_run}")
    else:
        report(tps, "d")
    out: dict[str, object] = {"runs": args.runs, "seconds": args.seconds, "scale": args.scale,
                              "policy_c": "buffered", "policy_s": "applied"}
    out |= {f"tps_{p}": round(v, 1) for p, v in tps.items()}
    for of in "cs":
        if of in tps:
            out |= {f"tps_{of}_over_{p}": round(tps[of] / v, 3) for p, v in tps.items() if p not in (of, "s")}
    out["glusterfs"] = "run" if not_run is None else f"not run: {not_run}"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
