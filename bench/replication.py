"""Replication cost, measured with fio on a simulated 2-node cluster.

Paths, side by side in one run, same workloads:
  (a) the plain local directory of node1;
  (b) the same directory through hakit-rfs's FUSE layer, no secondary attached;
  (c) the mirror as a module runs it: hakit-rfs on node1 streaming to node2's receiver
      over the veth LAN, in TLS 1.3 with the module key proved (the default);
  (p) the same mirror in plain TCP, nothing proved (--insecure): what encryption costs;
  (d) GlusterFS replica 2: glusterd and a brick on each node, the volume mounted with
      the FUSE client on node1 (reported as not run, with the reason, when it cannot run).
Workloads: sequential 1 MiB writes with one fsync at the end; 4 KiB random writes with
an fsync every 32; creation of 4 KiB files.  Each figure is the median of --runs runs.
Prints every figure and the ratios c/a, c/b, c/p and c/d; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from hakit.errors import HakitError
from hakit.files import write_atomic
from hakit.rfs.daemon import rfs_binary
from hakit.testing.rfsctl import RfsControl
from hakit.testing.sim import Sim

DIR = "/srv/bench"
PORT = 10200
KEY_FILE = "/var/lib/hakit/bench-rfs.key"

# GlusterFS keeps its state, logs, sockets and pid files under these: per node here.
GLUSTER_DIRS = ("/var/lib/glusterd", "/var/log/glusterfs", "/run/gluster")
BRICK = "/srv/hkbrick"
GLUSTER_MNT = "/srv/hkgluster"  # node1's client mount
VOLUME = "hkbench"
# glusterd's default socket is /run/glusterd.socket, one for the whole host: each node's
# goes into its own /run/gluster, and every gluster command is pointed at it.
GLUSTER_SOCK = "/run/gluster/glusterd.socket"
GLUSTERD = ["glusterd", "--no-daemon", f"--xlator-option=management.glusterd-sockfile={GLUSTER_SOCK}",
            "--pid-file=/run/gluster/glusterd.pid", "--log-file=/var/log/glusterfs/glusterd.log"]

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


# What the module gives hakit-rfs on each node (mirror.py): the module key, the node's credentials.
SECURITY = ["--auth-key-file", KEY_FILE, "--tls-cert", "/etc/hakit/pki/node.crt",
            "--tls-key", "/etc/hakit/pki/node.key", "--tls-ca", "/etc/hakit/pki/ca.crt"]


def with_rfs(sim: Sim, path: str, body: Callable[[], float]) -> float:
    """path b: no secondary; c: attached, secured as a module does; p: attached, plain."""
    procs = []
    security = SECURITY if path == "c" else ["--insecure"]
    try:
        if path != "b":
            procs.append(sim.popen("node2", [str(rfs_binary()), "secondary", "--dir", DIR, "--ctl",
                                             "/var/lib/hakit/bench-rfs.ctl", "--listen",
                                             f"{sim.addr('node2')}:{PORT}", *security],
                                   stderr=subprocess.DEVNULL))
            control(sim, "node2")
        procs.append(sim.popen("node1", [str(rfs_binary()), "primary", "--dir", DIR, "--ctl",
                                         "/var/lib/hakit/bench-rfs.ctl",
                                         *(security if path == "c" else [])], stderr=subprocess.DEVNULL))
        ctl = control(sim, "node1")
        if path != "b":
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


def measure(sim: Sim, paths: str, workload: str, args: argparse.Namespace) -> dict[str, float]:
    """The median of each path's runs.  The paths take turns, run after run: a drift of
    the host's speed (this machine is shared) then weighs on all of them alike."""
    values: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(args.runs):
        for path in paths:
            values[path].append(measure_once(sim, path, workload, args))
    return {path: statistics.median(v) for path, v in values.items()}


def measure_once(sim: Sim, path: str, workload: str, args: argparse.Namespace) -> float:
    if path == "d":
        # Through the mount, so that both bricks are emptied.
        sim.exec("node1", ["find", GLUSTER_MNT, "-mindepth", "1", "-delete"], timeout=300)
        return fio(sim, workload, GLUSTER_MNT, args)
    clean(sim)
    if path == "a":
        return fio(sim, workload, DIR, args)
    return with_rfs(sim, path, lambda: fio(sim, workload, DIR, args))


def gluster(sim: Sim, node: str, *argv: str, check: bool = True) -> str:
    run = sim.exec(node, ["gluster", f"--glusterd-sock={GLUSTER_SOCK}", "--mode=script", *argv],
                   check=check, timeout=120)
    return run.stdout


def gluster_missing() -> str | None:
    missing = [c for c in ("glusterd", "gluster", "mount.glusterfs") if shutil.which(c) is None]
    if missing:
        return f"{', '.join(missing)} not installed (make bench installs glusterfs-server, glusterfs-client)"
    return None


def glusterd_error(sim: Sim) -> str:
    """The last error glusterd logged, on either node (their logs go with the cluster)."""
    for node in ("node1", "node2"):
        with contextlib.suppress(OSError):
            errors = [line for line in sim.host_path(node, "/var/log/glusterfs/glusterd.log")
                      .read_text(errors="replace").splitlines() if "] E [" in line]
            if errors:
                return f"{node}: {errors[-1]}"
    return "no error in its logs"


@contextlib.contextmanager
def glusterfs(sim: Sim) -> Iterator[None]:
    """A replica-2 volume over a brick on each node, mounted on node1 at GLUSTER_MNT;
    everything stopped at the end, whatever happened (sim.down ends any straggler)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for node in ("node1", "node2"):
            procs.append(sim.popen(node, GLUSTERD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while not all(sim.host_path(n, GLUSTER_SOCK).exists() for n in ("node1", "node2")):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise HakitError(f"glusterd did not start: {glusterd_error(sim)}")
            time.sleep(0.1)
        gluster(sim, "node1", "peer", "probe", sim.addr("node2"))
        while "Peer in Cluster (Connected)" not in gluster(sim, "node1", "peer", "status"):
            if time.monotonic() > deadline:
                raise HakitError("node2's glusterd did not join node1's")
            time.sleep(0.2)
        # force: the bricks are on the root file system, which gluster advises against.
        gluster(sim, "node1", "volume", "create", VOLUME, "replica", "2",
                *(f"{sim.addr(n)}:{BRICK}/b" for n in ("node1", "node2")), "force")
        gluster(sim, "node1", "volume", "start", VOLUME)
        sim.exec("node1", ["mount", "-t", "glusterfs", f"{sim.addr('node1')}:/{VOLUME}", GLUSTER_MNT])
        yield
    finally:
        sim.exec("node1", ["umount", GLUSTER_MNT], check=False)
        if all(p.poll() is None for p in procs):
            # Stops the bricks and the self-heal daemons, which glusterd started detached.
            gluster(sim, "node1", "volume", "stop", VOLUME, "force", check=False)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=256, help="MiB written by the sequential job")
    ap.add_argument("--files", type=int, default=2000, help="files created by the small-file job")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated, among {', '.join(WORKLOADS)} (default: all)")
    args = ap.parse_args()
    workloads = args.workloads.split(",")
    if unknown := [w for w in workloads if w not in WORKLOADS]:
        ap.error(f"unknown workload {unknown[0]!r} (choose among {', '.join(WORKLOADS)})")
    if os.geteuid() != 0:
        print("bench/replication.py needs root (simulated cluster, FUSE)", file=sys.stderr)
        return 1
    if shutil.which("fio") is None:
        print("bench/replication.py needs fio: make bench installs it", file=sys.stderr)
        return 1
    sim = Sim("hkbrep")
    results: dict[str, dict[str, float]] = {}
    not_run = gluster_missing()
    try:
        sim.up(nodes=2, daemon=False, paths=(DIR, *GLUSTER_DIRS, BRICK, GLUSTER_MNT), owner_pid=os.getpid())
        key = os.urandom(32).hex() + "\n"
        for node in ("node1", "node2"):
            write_atomic(sim.host_path(node, KEY_FILE), key.encode())
        for workload in workloads:
            results[workload] = measure(sim, "abpc", workload, args)
            r = results[workload]
            print(f"{workload:>6} ({UNITS[workload]}): local {r['a']:.1f}, fuse {r['b']:.1f}, "
                  f"mirror plain {r['p']:.1f}, mirror {r['c']:.1f}; mirror/local {r['c'] / r['a']:.2f}, "
                  f"mirror/fuse {r['c'] / r['b']:.2f}, mirror/plain {r['c'] / r['p']:.2f}", flush=True)
        if not_run is None:
            # After the others, so that its daemons do not run beside them.
            try:
                with glusterfs(sim):
                    for workload, r in results.items():
                        r |= measure(sim, "d", workload, args)
                        print(f"{workload:>6} ({UNITS[workload]}): glusterfs {r['d']:.1f}; "
                              f"mirror/glusterfs {r['c'] / r['d']:.2f}", flush=True)
            except HakitError as exc:
                not_run = str(exc)
    finally:
        sim.down()
    if not_run is not None:
        print(f"GlusterFS: not run: {not_run}")
    out: dict[str, object] = {"runs": args.runs, "seq_mb": args.size, "small_files": args.files}
    for workload, r in results.items():
        out |= {f"{workload}_{k}": round(r[k], 1) for k in "abpc"}
        out[f"{workload}_c_over_a"] = round(r["c"] / r["a"], 3)
        out[f"{workload}_c_over_b"] = round(r["c"] / r["b"], 3)
        out[f"{workload}_c_over_p"] = round(r["c"] / r["p"], 3)
        if not_run is None:
            out[f"{workload}_d"] = round(r["d"], 1)
            out[f"{workload}_c_over_d"] = round(r["c"] / r["d"], 3)
    out["glusterfs"] = "run" if not_run is None else f"not run: {not_run}"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
