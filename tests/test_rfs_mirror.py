"""hakit-rfs between two simulated nodes: the primary's FUSE mount over the real
directory streams every change to the secondary's receiver, over the nodes' LAN."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakit.rfs.daemon import rfs_binary
from hakit.testing.sim import Sim

pytestmark = pytest.mark.root

REP = "/srv/rep"
PORT = 10100

WORKLOAD = r"""
import ctypes, mmap, os, sys
root = sys.argv[1]
p = lambda *a: os.path.join(root, *a)
os.makedirs(p("d1/d2"))
with open(p("d1/f"), "wb") as f:
    f.write(os.urandom(300_000))
    os.fsync(f.fileno())
with open(p("d1/f"), "ab") as f:                          # O_APPEND
    f.write(b"tail")
with open(p("sparse"), "wb") as f:                        # a hole, then data
    f.seek(5 << 20)
    f.write(b"end")
with open(p("trunc"), "wb") as f:
    f.write(b"x" * 100_000)
os.truncate(p("trunc"), 10)                               # down
os.truncate(p("trunc"), 50_000)                           # up
with open(p("old"), "w") as f:
    f.write("replaced")
with open(p("target"), "w") as f:
    f.write("overwritten")
os.rename(p("old"), p("target"))                          # rename over an existing file
os.symlink("d1/f", p("link"))
os.mkfifo(p("fifo"))
os.chmod(p("d1/f"), 0o640)
os.chown(p("target"), 123, 456)
os.utime(p("sparse"), ns=(1_000_000_000, 2_000_000_000))
os.setxattr(p("target"), "user.k", b"v")
with open(p("mm"), "wb") as f:
    f.truncate(8192)
with open(p("mm"), "r+b") as f:                           # shared writable mmap
    m = mmap.mmap(f.fileno(), 8192)
    m[100:105] = b"mmap!"
    m.flush()
    m.close()
    os.fsync(f.fileno())
fd = os.open(p("direct"), os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
buf = mmap.mmap(-1, 4096)
buf.write(b"d" * 4096)
os.write(fd, buf)                                         # O_DIRECT, aligned buffer
os.fsync(fd)
os.close(fd)
os.makedirs(p("gone/deeper"))
os.rmdir(p("gone/deeper"))
os.rmdir(p("gone"))
with open(p("tmp"), "w") as f:
    f.write("bye")
os.unlink(p("tmp"))
try:
    os.link(p("target"), p("hard"))
    print("hardlink: allowed")
except OSError as e:
    print(f"hardlink: {e.errno}")
"""


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


class Ctl:
    def __init__(self, path: Path) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")

    def __call__(self, line: str) -> str:
        self.file.write(line + "\n")
        self.file.flush()
        while True:
            reply = self.file.readline().strip()
            if not reply.startswith("event "):
                return reply


@pytest.fixture
def pair(make_sim) -> Iterator[tuple[Sim, Ctl, Ctl]]:
    sim = make_sim(nodes=2, paths=(REP,))
    binary = str(rfs_binary())
    procs: list[subprocess.Popen] = []
    try:
        procs.append(sim.popen("node2", [binary, "secondary", "--dir", REP, "--ctl",
                                         "/var/lib/hakit/rfs.ctl", "--listen", f"{sim.addr('node2')}:{PORT}",
                                         "--xattr"]))
        procs.append(sim.popen("node1", [binary, "primary", "--dir", REP, "--ctl", "/var/lib/hakit/rfs.ctl",
                                         "--xattr"]))
        second = Ctl(sim.host_path("node2", "/var/lib/hakit/rfs.ctl"))
        prim = Ctl(sim.host_path("node1", "/var/lib/hakit/rfs.ctl"))
        assert prim(f"attach {sim.addr('node2')} {PORT}") == "ok"
        yield sim, prim, second
        assert prim("stop") == "ok" and second("stop") == "ok"
        for proc in procs:
            assert proc.wait(timeout=20) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_every_operation_lands_on_the_secondary(pair):
    sim, prim, _ = pair
    run = sim.exec("node1", ["python3", "-c", WORKLOAD, REP], capture=True)
    assert "hardlink: 1" in run.stdout  # EPERM: hard links are not replicated, so refused
    primary, secondary = sim.host_path("node1", REP), sim.host_path("node2", REP)
    expected = tree(primary)
    assert "sparse" in expected and "hard" not in expected
    # Everything made durable (fsync, close) is there already; give buffered writes their delay.
    deadline = time.monotonic() + 5
    while tree(secondary) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tree(secondary) == expected
    assert os.getxattr(secondary / "target", "user.k") == b"v"
    # The hole stayed a hole on the secondary.
    assert os.stat(secondary / "sparse").st_blocks * 512 < 1 << 20
    assert "bytes_sent=" in prim("stats")


def test_secondary_is_read_only_to_applications(pair):
    sim, _, _ = pair
    refused = sim.exec("node2", ["sh", "-c", f"echo x > {REP}/new"], check=False, capture=True)
    assert refused.returncode != 0 and "Read-only" in refused.stderr
