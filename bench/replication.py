"""Replication cost, measured with fio on a simulated 2-node cluster.

The paths of datapath.py side by side in one run, same jobs: (a) the plain directory,
(b) hakit-rfs's FUSE layer alone, (c) the mirror (TLS, writes="buffered", the default),
(s) the mirror with writes="applied", (p) the mirror in plain TCP, (d) GlusterFS
replica 2; and (a2) the host's own ceiling for two copies: the same job run by two
writers at once on two plain directories of node1, each figure per copy.
Write jobs: sequential 1 MiB writes with one fsync at the end; 4 KiB random writes with
an fsync every 32; creation of 4 KiB files.  Read jobs, on a, b and c: sequential 1 MiB
reads and 4 KiB random reads of a file written beforehand, cold (its pages dropped, the
real file's and the mount's) and warm (read once before).  Each figure is the median of
--runs runs.  Prints every figure and the ratios; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys

try:
    import datapath
    import harness
    from datapath import DIR, GLUSTER_MNT, measure
    from hakit.errors import HakitError
    from hakit.testing.sim import Sim
except ModuleNotFoundError as exc:
    sys.exit(f"error: cannot import {exc.name}: build hakit first ('make build') and run the bench "
             "with its Python: .venv/bin/python bench/replication.py (or 'make bench')")

DIR2 = "/srv/bench2"  # a2's second copy

WRITES: dict[str, list[str]] = {
    "seq": ["--rw=write", "--bs=1M", "--size={size}M", "--end_fsync=1"],
    "rand": ["--rw=randwrite", "--bs=4k", "--size={rsize}M", "--fsync=32"],
    "small": ["--rw=write", "--bs=4k", "--filesize=4k", "--nrfiles={files}", "--openfiles=1",
              "--file_service_type=sequential", "--create_on_open=1"],
}
READS: dict[str, list[str]] = {
    "read": ["--rw=read", "--bs=1M", "--size={size}M"],
    "randread": ["--rw=randread", "--bs=4k", "--size={rsize}M"],
}
UNITS = {"seq": "MB/s", "rand": "IOPS", "small": "files/s", "read": "MB/s", "randread": "IOPS"}
WRITE_PATHS = "a", "a2", "b", "p", "c", "s"
READ_PATHS = "a", "b", "c"
READ_FILE = "data"  # fio's job name: the file it reads is data.0.0


def fio(sim: Sim, workload: str, dirs: list[str], args: argparse.Namespace, *extra: str) -> float:
    """The job run by one writer per directory, all at once: the mean figure per writer."""
    opts = [o.format(size=args.size, rsize=args.size // 4, files=args.files)
            for o in {**WRITES, **READS}[workload]]
    name = READ_FILE if workload in READS else workload
    jobs = [a for d in dirs for a in (f"--name={name}", f"--directory={d}")]
    run = sim.exec("node1", ["fio", "--ioengine=psync", "--output-format=json", *opts, *extra, *jobs],
                   capture=True, timeout=600)
    return statistics.mean(figure(workload, job, args) for job in json.loads(run.stdout)["jobs"])


def figure(workload: str, job: dict[str, dict[str, float]], args: argparse.Namespace) -> float:
    side = job["read" if workload in READS else "write"]
    if workload in ("seq", "read"):
        return side["bw_bytes"] / 1e6
    if workload in ("rand", "randread"):
        return side["iops"]
    return args.files / (side["runtime"] / 1000) if side["runtime"] else float("nan")


def drop_cold(sim: Sim) -> None:
    """The real file's pages out of the page cache (fio drops the mount's at its start:
    --invalidate, its default)."""
    fd = os.open(sim.host_path("node1", f"{DIR}/{READ_FILE}.0.0"), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def reads(sim: Sim, workload: str, args: argparse.Namespace) -> dict[str, float]:
    """Cold and warm figures of a read job on the file laid out first."""
    fio(sim, workload, [DIR], args, "--rw=write", "--bs=1M", "--end_fsync=1")
    drop_cold(sim)
    cold = fio(sim, workload, [DIR], args)
    fio(sim, workload, [DIR], args, "--invalidate=0")
    return {"cold": cold, "warm": fio(sim, workload, [DIR], args, "--invalidate=0")}


def write_once(sim: Sim, path: str, workload: str, args: argparse.Namespace) -> dict[str, float]:
    if path == "d":
        datapath.empty_gluster(sim)
        return {"w": fio(sim, workload, [GLUSTER_MNT], args)}
    datapath.empty(sim, DIR, DIR2)
    if path in ("a", "a2"):
        return {"w": fio(sim, workload, [DIR, DIR2] if path == "a2" else [DIR], args)}
    with datapath.rfs(sim, path):
        return {"w": fio(sim, workload, [DIR], args)}


def read_once(sim: Sim, path: str, workload: str, args: argparse.Namespace) -> dict[str, float]:
    datapath.empty(sim, DIR)
    if path == "a":
        return reads(sim, workload, args)
    with datapath.rfs(sim, path):
        return reads(sim, workload, args)


def ratios(r: dict[str, float], of: str, to: str) -> str:
    return ", ".join(f"{of}/{p} {r[of] / r[p]:.2f}" for p in to.split(",") if p in r and p != of)


def bench(args: argparse.Namespace, workloads: list[str]) -> tuple[dict[str, dict[str, float]], str | None]:
    """Each job's figure per path, and why GlusterFS did not run (None: it did)."""
    harness.require(commands=("fio",))
    results: dict[str, dict[str, float]] = {}  # job -> path -> figure
    not_run = datapath.gluster_missing()
    with datapath.cluster("hkbrep", paths=(DIR2,)) as sim:
        for workload in workloads:
            unit = UNITS[workload]
            if workload in WRITES:
                r = results[workload] = {p: f["w"] for p, f in measure(
                    WRITE_PATHS, functools.partial(write_once, sim, workload=workload, args=args),
                    args.runs).items()}
                print(f"{workload:>9} ({unit}): local {r['a']:.1f}, two local copies {r['a2']:.1f} each, "
                      f"fuse {r['b']:.1f}, mirror plain {r['p']:.1f}, mirror {r['c']:.1f}, "
                      f"mirror applied {r['s']:.1f}; {ratios(r, 'c', 'a,a2,b,p')}; "
                      f"{ratios(r, 's', 'a,a2,b,c')}", flush=True)
                continue
            by_path = measure(READ_PATHS, functools.partial(read_once, sim, workload=workload, args=args),
                              args.runs)
            for cache in ("cold", "warm"):
                r = results[f"{workload}_{cache}"] = {p: f[cache] for p, f in by_path.items()}
                print(f"{workload + ' ' + cache:>14} ({unit}): local {r['a']:.1f}, fuse {r['b']:.1f}, "
                      f"mirror {r['c']:.1f}; {ratios(r, 'c', 'a,b')}", flush=True)
        if not_run is None and any(w in WRITES for w in workloads):
            # After the others, so that its daemons do not run beside them.
            try:
                with datapath.glusterfs(sim):
                    for workload in (w for w in workloads if w in WRITES):
                        r = results[workload]
                        r["d"] = measure(("d",), functools.partial(write_once, sim, workload=workload,
                                                                   args=args), args.runs)["d"]["w"]
                        print(f"{workload:>9} ({UNITS[workload]}): glusterfs {r['d']:.1f}; "
                              f"mirror/glusterfs {r['c'] / r['d']:.2f}, "
                              f"mirror applied/glusterfs {r['s'] / r['d']:.2f}", flush=True)
            except HakitError as exc:
                not_run = str(exc)
    return results, not_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=256, help="MiB written by the sequential job, read by 'read'")
    ap.add_argument("--files", type=int, default=1000, help="files created by the small-file job")
    every = [*WRITES, *READS]
    ap.add_argument("--workloads", default=",".join(every),
                    help=f"comma-separated, among {', '.join(every)} (default: all)")
    args = ap.parse_args()
    workloads = args.workloads.split(",")
    if unknown := [w for w in workloads if w not in every]:
        ap.error(f"unknown workload {unknown[0]!r} (choose among {', '.join(every)})")
    results, not_run = harness.guarded(lambda: bench(args, workloads), "bench/replication.py")
    if not_run is not None:
        print(f"GlusterFS: not run: {not_run}")
    out: dict[str, object] = {"runs": args.runs, "seq_mb": args.size, "small_files": args.files}
    for job, r in results.items():
        out |= {f"{job}_{k}": round(v, 1) for k, v in r.items()}
        out |= {f"{job}_c_over_{p}": round(r["c"] / r[p], 3) for p in r if p not in ("c", "s")}
        if "s" in r:
            out |= {f"{job}_s_over_{p}": round(r["s"] / r[p], 3) for p in r if p != "s"}
    out["glusterfs"] = "run" if not_run is None else f"not run: {not_run}"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
