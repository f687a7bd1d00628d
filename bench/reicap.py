"""The application's write throughput during a full sync, with and without the
synchronisation's bandwidth cap (--rei-bw-percent), raw hakit-rfs on a simulated 2-node
cluster.

A data set of --files files of 1 MiB is laid on the primary; for each setting, an empty
secondary is attached, the full sync starts, and fio writes sequentially through the
primary's mount for --seconds (buffered 1 MiB writes, one job); fio's throughput is the
figure.  The same fio run with no sync running gives the reference.  Settings take
turns, --rounds times.  Prints every figure and the ratios; the last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

try:
    import harness
    from hakit.errors import HakitError
    from hakit.testing.rfsctl import RfsControl
    from reintegration import CTL, DIR, RFS_PORT, Rfs, cluster, lay_data
except ModuleNotFoundError as exc:
    sys.exit(
        f"error: cannot import {exc.name}: build hakit first ('make build') and run the bench "
        "with its Python: .venv/bin/python bench/reicap.py (or 'make bench')"
    )

FIO_FILE = f"{DIR}/fio.data"


def fio_mb_s(rfs: Rfs, seconds: float, size_mib: int) -> float:
    run = rfs.sim.exec("node1", ["fio", "--name=app", f"--filename={FIO_FILE}", "--rw=write", "--bs=1M",
                                 f"--size={size_mib}M", "--time_based", f"--runtime={seconds}",
                                 "--output-format=json"], timeout=seconds + 120)
    job = json.loads(run.stdout)["jobs"][0]["write"]
    return job["bw_bytes"] / 1e6


def one(rfs: Rfs, percent: int | None, args: argparse.Namespace) -> float:
    """fio's MB/s while a full sync to an empty secondary runs at this cap (None: no sync)."""
    options = ("--nbrei", str(args.nbrei), "--rei-bw-percent", str(percent or 100))
    second = rfs.secondary()
    prim = rfs.start("node1", ["primary", *options])
    try:
        if percent is None:
            return fio_mb_s(rfs, args.seconds, args.fio_size)
        attach = f"attach {rfs.sim.addr('node2')} {RFS_PORT}"
        if (reply := prim(attach)) != "ok":
            raise HakitError(f"{attach}: {reply}")
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(rfs.sync, prim, "node1", "fullsync")
            time.sleep(0.2)
            mb_s = fio_mb_s(rfs, args.seconds, args.fio_size)
            # The sync's own connection waits for its reply: another one stops it (only fio's
            # figure counts, the sync is cancelled).
            with RfsControl(rfs.sim.host_path("node1", CTL)) as watch:
                still = watch.stats()["sync_state"] == "running"
                watch("stop")
            rfs.procs.pop("node1").wait(timeout=30)
            with contextlib.suppress(HakitError):
                running.result(timeout=60)
        if not still:
            raise HakitError("the full sync ended before fio did: give more --files")
        return mb_s
    finally:
        for node, ctl in (("node1", prim), ("node2", second)):
            if node in rfs.procs:
                with contextlib.suppress(HakitError, OSError):
                    rfs.stop(node, ctl)
        # Each setting starts from an empty secondary.
        rfs.sim.exec("node2", ["sh", "-c", f"rm -rf {DIR}/* {DIR}/.[!.]*"], check=False)
        rfs.sim.exec("node1", ["rm", "-f", FIO_FILE], check=False)


def bench(args: argparse.Namespace) -> dict[str, object]:
    figures: dict[str, list[float]] = {"alone": [], "nocap": [], "cap": []}
    with cluster() as sim, contextlib.closing(Rfs(sim)) as rfs:
        lay_data(sim.host_path("node1", DIR), 0, args.files)
        for n in range(args.rounds):
            for name, percent in (("alone", None), ("nocap", 100), ("cap", args.percent)):
                figures[name].append(one(rfs, percent, args))
                print(f"round {n + 1}, {name}: fio {figures[name][-1]:.1f} MB/s", flush=True)
    med = {name: statistics.median(values) for name, values in figures.items()}
    return {
        "cap_over_nocap": round(med["cap"] / med["nocap"], 3),
        "cap_over_alone": round(med["cap"] / med["alone"], 3),
        "nocap_over_alone": round(med["nocap"] / med["alone"], 3),
        "fio_alone_mb_s": round(med["alone"], 1),
        "fio_nocap_mb_s": round(med["nocap"], 1),
        "fio_cap_mb_s": round(med["cap"], 1),
        "percent": args.percent,
        "nbrei": args.nbrei,
        "files": args.files,
        "seconds": args.seconds,
        "rounds": args.rounds,
        **{f"fio_{name}_each": [round(v, 1) for v in values] for name, values in figures.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2048, help="1 MiB files to synchronise (default 2048)")
    ap.add_argument("--percent", type=int, default=20, help="the cap, --rei-bw-percent (default 20)")
    ap.add_argument("--seconds", type=int, default=2, help="fio's run (default 2)")
    ap.add_argument("--fio-size", type=int, default=256, help="MiB fio writes over and over (default 256)")
    ap.add_argument("--nbrei", type=int, default=3, help="threads synchronising files (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="turns of the three settings (default 3)")
    args = ap.parse_args()
    counts = (args.files, args.seconds, args.fio_size, args.nbrei, args.rounds)
    if min(counts) < 1 or not 1 <= args.percent <= 99:
        ap.error("--files, --seconds, --fio-size, --nbrei and --rounds must be at least 1, --percent 1 to 99")
    harness.guarded(harness.require, "bench/reicap.py")
    result = harness.guarded(lambda: bench(args), "bench/reicap.py")
    print(f"fio during a full sync (median of {args.rounds}): no cap {result['fio_nocap_mb_s']} MB/s, "
          f"cap {args.percent} % {result['fio_cap_mb_s']} MB/s, no sync {result['fio_alone_mb_s']} MB/s; "
          f"cap / no cap {result['cap_over_nocap']}, cap / no sync {result['cap_over_alone']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
