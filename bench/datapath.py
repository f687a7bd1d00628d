"""The data paths the replication and database benches compare, on node1 of a 2-node
simulated cluster, and how each is set up and taken down.

  (a) the plain local directory of node1 (DIR);
  (b) the same directory through hakit-rfs's FUSE layer, no secondary attached;
  (c) the mirror as a module runs it by default (writes="buffered"): hakit-rfs on node1
      streaming to node2's receiver over the veth LAN, in TLS 1.3 with the module key proved;
  (s) the same mirror with writes="applied" (hakit-rfs --strict): every write waits for
      the secondary;
  (p) the mirror of (c) in plain TCP, nothing proved (--insecure): what encryption costs;
  (d) GlusterFS replica 2: glusterd and a brick on each node, the volume mounted with the
      FUSE client on node1 at GLUSTER_MNT.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

import harness
from hakit.errors import HakitError
from hakit.files import write_atomic
from hakit.rfs.daemon import rfs_binary
from hakit.testing.rfsctl import RfsControl
from hakit.testing.sim import Sim

DIR = "/srv/bench"
PORT = 10200
KEY_FILE = "/var/lib/hakit/bench-rfs.key"
CTL = "/var/lib/hakit/bench-rfs.ctl"
MIRRORS = "csp"  # the paths where node2 receives

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

# What the module gives hakit-rfs on each node (mirror.py): the module key, the node's credentials.
SECURITY = ["--auth-key-file", KEY_FILE, "--tls-cert", "/etc/hakit/pki/node.crt",
            "--tls-key", "/etc/hakit/pki/node.key", "--tls-ca", "/etc/hakit/pki/ca.crt"]


@contextlib.contextmanager
def cluster(name: str, paths: Sequence[str] = ()) -> Iterator[Sim]:
    """Two nodes with DIR, GlusterFS's directories and `paths` of their own, the module
    key on both; removed at the end, also on an error, Ctrl-C or SIGTERM (which kills
    whatever still runs in the nodes)."""
    with harness.simulated_cluster(2, name, daemon=False,
                                   paths=(DIR, *GLUSTER_DIRS, BRICK, GLUSTER_MNT, *paths)) as sim:
        key = os.urandom(32).hex() + "\n"
        for node in ("node1", "node2"):
            write_atomic(sim.host_path(node, KEY_FILE), key.encode())
        yield sim


def measure(paths: tuple[str, ...], once: Callable[[str], dict[str, float]],
            runs: int) -> dict[str, dict[str, float]]:
    """The median of each path's runs, per figure.  The paths take turns, run after run:
    a drift of the host's speed (this machine is shared) then weighs on all of them alike."""
    values: dict[str, dict[str, list[float]]] = {path: {} for path in paths}
    for _ in range(runs):
        for path in paths:
            for key, value in once(path).items():
                values[path].setdefault(key, []).append(value)
    return {path: {k: statistics.median(v) for k, v in figures.items()} for path, figures in values.items()}


def control(sim: Sim, node: str) -> RfsControl:
    return RfsControl(sim.host_path(node, CTL))


def stop(procs: Sequence[subprocess.Popen[bytes]], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Stop processes by their pid, the last started first; kill what outlives `timeout`."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def rfs(sim: Sim, path: str) -> Iterator[None]:
    """hakit-rfs over node1's DIR for path b (no secondary), c, s or p (node2 attached)."""
    procs = []
    security = ["--insecure"] if path == "p" else SECURITY
    try:
        if path in MIRRORS:
            procs.append(sim.popen("node2", [str(rfs_binary()), "secondary", "--dir", DIR, "--ctl", CTL,
                                             "--listen", f"{sim.addr('node2')}:{PORT}", *security],
                                   stderr=subprocess.DEVNULL))
            control(sim, "node2")
        procs.append(sim.popen("node1", [str(rfs_binary()), "primary", "--dir", DIR, "--ctl", CTL,
                                         *(security if path != "p" else []),
                                         *(["--strict"] if path == "s" else [])],
                                   stderr=subprocess.DEVNULL))
        ctl = control(sim, "node1")
        if path in MIRRORS:
            reply = ctl(f"attach {sim.addr('node2')} {PORT}")
            if reply != "ok":
                raise HakitError(f"attach: {reply}")
        yield
    finally:
        stop(procs)


def empty(sim: Sim, *dirs: str) -> None:
    """Remove what `dirs` hold on both nodes (their real directories: nothing mounted)."""
    for node in ("node1", "node2"):
        for directory in dirs:
            for entry in sim.host_path(node, directory).iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


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
        stop(procs)


def empty_gluster(sim: Sim) -> None:
    """Through the mount, so that both bricks are emptied."""
    sim.exec("node1", ["find", GLUSTER_MNT, "-mindepth", "1", "-delete"], timeout=300)
