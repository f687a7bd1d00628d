"""Two simulated nodes running hakit-rfs by hand (no module): the `nodes` fixture (a
plugin of conftest.py) and what the replication tests share (test_rfs_mirror.py,
test_rfs_exclude.py, test_rfs_resync.py): the tree compared, a data set to lay out
(lay_tree) and an application writing all over it (WRITER)."""

from __future__ import annotations

import hashlib
import os
import random
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


def link_groups(root: Path) -> list[tuple[str, ...]]:
    """The names that share an inode, for every non-directory with several (sorted)."""
    by_inode: dict[int, list[str]] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = Path(dirpath) / name
            st = full.lstat()
            if st.st_nlink > 1:
                by_inode.setdefault(st.st_ino, []).append(str(full.relative_to(root)))
    return sorted(tuple(sorted(names)) for names in by_inode.values())


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
        for ctl in ctls:
            ctl.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def full_sync(prim: RfsControl) -> dict[str, int]:
    reply = prim("fullsync")
    assert reply.startswith("ok files="), reply
    return {k: int(v) for k, v in (kv.split("=") for kv in reply.split()[1:])}


BIG = 4 << 20


def lay_tree(root: Path, seed: int = 1) -> None:
    """What a full sync must carry: thousands of small files in nested directories, a few
    large ones, a sparse one, symlinks, a FIFO, owners, modes (set-ID too), an xattr."""
    rnd = random.Random(seed)
    for i in range(2000):
        d = root / f"d{i % 20}" / f"e{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(rnd.randbytes(rnd.randrange(0, 6000)))
    for i in range(3):
        (root / f"big{i}").write_bytes(rnd.randbytes(BIG))
    with open(root / "sparse", "wb") as f:
        for off in (1 << 20, 9 << 20, 30 << 20):
            f.seek(off)
            f.write(rnd.randbytes(5000))
        f.truncate(40 << 20)
    os.symlink("d1/e1", root / "link-dir")
    os.symlink("nowhere", root / "dangling")
    os.lchown(root / "dangling", 77, 88)
    os.mkfifo(root / "fifo", 0o640)
    os.chown(root / "big1", 1234, 567)
    os.chmod(root / "big1", 0o4750)
    os.chmod(root / "d3", 0o700)
    os.setxattr(root / "big0", "user.tag", b"primary")
    os.utime(root / "big2", ns=(1_000_000_000, 2_000_000_000))


WRITER = r"""
import os, random, sys, time
root, seconds = sys.argv[1], float(sys.argv[2])
rnd = random.Random(7)
p = lambda *a: os.path.join(root, *a)
os.makedirs(p("live"), exist_ok=True)
end, n = time.monotonic() + seconds, 0
while time.monotonic() < end:
    n += 1
    d = f"d{rnd.randrange(20)}/e{rnd.randrange(7)}"
    os.makedirs(p(d), exist_ok=True)
    with open(p(d, f"new{n}"), "wb") as f:                    # new files all over the tree
        f.write(rnd.randbytes(rnd.randrange(1, 20000)))
    with open(p(f"big{n % 3}"), "r+b") as f:                  # rewrites in the large files
        f.seek(rnd.randrange(0, 4 << 20))
        f.write(rnd.randbytes(rnd.randrange(1, 100000)))
    with open(p("live", "log"), "ab") as f:                   # appends
        f.write(f"line {n}\n".encode())
    victim = p(d, f"f{rnd.randrange(2000)}")
    if n % 2 and os.path.exists(victim):                      # renames across directories
        os.rename(victim, p(f"d{rnd.randrange(20)}", f"moved{n}"))
    if n % 25 == 0:                                           # a whole directory moves
        os.rename(p(f"d{n % 20}"), p(f"dir-moved{n}"))
print(n)
"""
