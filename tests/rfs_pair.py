"""Two simulated nodes running hakit-rfs by hand (no module): the fixture and helpers the
replication tests share (test_rfs_mirror.py, test_rfs_exclude.py)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hakit.rfs.daemon import rfs_binary
from hakit.testing.rfsctl import RfsControl
from hakit.testing.sim import Sim

REP = "/srv/rep"
PORT = 10100

Start = Callable[..., tuple[RfsControl, RfsControl]]


def tree(root: Path) -> dict[str, tuple]:
    """Everything a user relies on: type, mode, owner, size, content, link target."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath) / name
            st = full.lstat()
            rel = str(full.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
                out[rel] = ("f", st.st_mode, st.st_uid, st.st_gid, st.st_size, digest, st.st_mtime_ns)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(full))
            else:
                out[rel] = ("d" if stat.S_ISDIR(st.st_mode) else "o", st.st_mode, st.st_uid, st.st_gid)
    return out


@pytest.fixture(name="nodes")
def nodes_fixture(make_sim) -> Iterator[tuple[Sim, Start]]:
    """nodes = (sim, start): start(*options) runs the secondary and the primary, both with these
    extra options, not attached, and returns their control connections; the real
    directories can be laid out before."""
    sim = make_sim(nodes=2, paths=(REP,))
    binary = str(rfs_binary())
    procs: list[subprocess.Popen] = []
    ctls: list[RfsControl] = []

    def start(*options: str) -> tuple[RfsControl, RfsControl]:
        procs.append(sim.popen("node2", [binary, "secondary", "--dir", REP, "--ctl",
                                         "/var/lib/hakit/rfs.ctl", "--listen", f"{sim.addr('node2')}:{PORT}",
                                         "--insecure", "--xattr", *options]))
        procs.append(sim.popen("node1", [binary, "primary", "--dir", REP, "--ctl", "/var/lib/hakit/rfs.ctl",
                                         "--xattr", *options]))
        ctls.extend(RfsControl(sim.host_path(node, "/var/lib/hakit/rfs.ctl")) for node in ("node1", "node2"))
        return ctls[0], ctls[1]

    try:
        yield sim, start
        assert all(ctl("stop") == "ok" for ctl in ctls)
        for proc in procs:
            assert proc.wait(timeout=20) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def full_sync(prim: RfsControl) -> dict[str, int]:
    reply = prim("fullsync")
    assert reply.startswith("ok files="), reply
    return {k: int(v) for k, v in (kv.split("=") for kv in reply.split()[1:])}
