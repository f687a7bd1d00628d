"""Replication cost, measured with fio on a simulated 2-node cluster.

Paths, side by side in one run, same workloads:
  (a) the plain local directory of node1;
  (b) the same directory through hakit-rfs's FUSE layer, no secondary attached;
  (c) the mirror: hakit-rfs on node1 streaming to node2's receiver over the veth LAN;
  (d) GlusterFS replica 2, when it can run here (it is reported as not run otherwise).
Workloads: sequential 1 MiB writes with one fsync at the end; 4 KiB random writes with
an fsync every 32; creation of 4 KiB files.  Each figure is the median of --runs runs.
Prints every figure and the ratios c/a and c/b; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable

from hakit.rfs.daemon import rfs_binary
from hakit.testing.rfsctl import RfsControl
from hakit.testing.sim import Sim

DIR = "/srv/bench"
PORT = 10200

WORKLOADS: dict[str, list[str]] = {
    "seq": ["--rw=write", "--bs=1M", "--size={size}M", "--end_fsync=1"],
    "rand": ["--rw=randwrite", "--bs=4k", "--size={rsize}M", "--fsync=32"],
    "small": ["--rw=write", "--bs=4k", "--filesize=4k", "--nrfiles={files}", "--openfiles=1",
              "--file_service_type=sequential", "--create_on_open=1"],
}
UNITS = {"seq": "MB/s", "rand": "IOPS", "small": "files/s"}


def fio(sim: Sim, workload: str, directory: str, args: argparse.Namespace) -> float:
    opts = [o.format(size=args.size, rsize=args.size // 4, files=args.files) for o in WORKLOADS[workload]]
    run = sim.exec("node1", [
        "fio", f"--name={workload}", f"--directory={directory}", "--ioengine=psync",
        "--output-format=json", *opts,
    ], capture=True, timeout=600)
    job = json.loads(run.stdout)["jobs"][0]["write"]
    if workload == "seq":
        return job["bw_bytes"] / 1e6
    if workload == "rand":
        return job["iops"]
    return args.files / (job["runtime"] / 1000) if job["runtime"] else float("nan")


def control(sim: Sim, node: str) -> RfsControl:
    return RfsControl(sim.host_path(node, "/var/lib/hakit/bench-rfs.ctl"))


def with_rfs(sim: Sim, attach: bool, body: Callable[[], float]) -> float:
    procs = []
    try:
        if attach:
            procs.append(sim.popen("node2", [str(rfs_binary()), "secondary", "--dir", DIR, "--ctl",
                                             "/var/lib/hakit/bench-rfs.ctl", "--listen",
                                             f"{sim.addr('node2')}:{PORT}"], stderr=subprocess.DEVNULL))
            control(sim, "node2")
        procs.append(sim.popen("node1", [str(rfs_binary()), "primary", "--dir", DIR, "--ctl",
                                         "/var/lib/hakit/bench-rfs.ctl"], stderr=subprocess.DEVNULL))
        ctl = control(sim, "node1")
        if attach:
            reply = ctl(f"attach {sim.addr('node2')} {PORT}")
            if reply != "ok":
                raise RuntimeError(f"attach: {reply}")
        return body()
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def clean(sim: Sim) -> None:
    for node in ("node1", "node2"):
        root = sim.host_path(node, DIR)
        for entry in root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def measure(sim: Sim, path: str, workload: str, args: argparse.Namespace) -> float:
    values = []
    for _ in range(args.runs):
        clean(sim)
        if path == "a":
            values.append(fio(sim, workload, DIR, args))
        else:
            values.append(with_rfs(sim, path == "c", lambda: fio(sim, workload, DIR, args)))
    return statistics.median(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=256, help="MiB written by the sequential job")
    ap.add_argument("--files", type=int, default=2000, help="files created by the small-file job")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/replication.py needs root (simulated cluster, FUSE)", file=sys.stderr)
        return 1
    if shutil.which("fio") is None:
        print("bench/replication.py needs fio: make bench installs it", file=sys.stderr)
        return 1
    sim = Sim("hkbrep")
    results: dict[str, dict[str, float]] = {}
    try:
        sim.up(nodes=2, daemon=False, paths=(DIR,), owner_pid=os.getpid())
        for workload in WORKLOADS:
            results[workload] = {p: measure(sim, p, workload, args) for p in ("a", "b", "c")}
            r = results[workload]
            print(f"{workload:>6} ({UNITS[workload]}): local {r['a']:.1f}, fuse {r['b']:.1f}, "
                  f"mirror {r['c']:.1f}; mirror/local {r['c'] / r['a']:.2f}, "
                  f"mirror/fuse {r['c'] / r['b']:.2f}", flush=True)
    finally:
        sim.down()
    print("GlusterFS (d): not run — it needs glusterd on every node, not set up by this bench yet")
    out = {"runs": args.runs, "seq_mb": args.size, "small_files": args.files}
    for workload, r in results.items():
        out[f"{workload}_a"], out[f"{workload}_b"], out[f"{workload}_c"] = (round(r[k], 1) for k in "abc")
        out[f"{workload}_c_over_a"] = round(r["c"] / r["a"], 3)
        out[f"{workload}_c_over_b"] = round(r["c"] / r["b"], 3)
    out["glusterfs"] = "not run"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
