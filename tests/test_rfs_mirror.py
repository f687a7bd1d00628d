"""hakit-rfs between two simulated nodes: the primary's FUSE mount over the real
directory streams every change to the secondary's receiver, over the nodes' LAN; a full
sync makes a secondary that differs identical, also while an application writes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time

import pytest

from hakit.testing.rfsctl import RfsControl
from hakit.testing.sim import Sim
from tests.rfs_pair import PORT, REP, WRITER, full_sync, lay_tree, tree

pytestmark = pytest.mark.root

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
os.link(p("target"), p("hard"))
"""


@pytest.fixture
def pair(nodes) -> tuple[Sim, RfsControl, RfsControl]:
    sim, start = nodes
    prim, second = start()
    assert prim(f"attach {sim.addr('node2')} {PORT}") == "ok"
    return sim, prim, second


def test_every_operation_lands_on_the_secondary(pair):
    sim, prim, _ = pair
    run = sim.exec("node1", ["python3", "-c", WORKLOAD, REP], capture=True)
    assert run.returncode == 0
    primary, secondary = sim.host_path("node1", REP), sim.host_path("node2", REP)
    expected = tree(primary)
    assert "sparse" in expected and expected["hard"] == expected["target"]
    # Everything made durable (fsync, close) is there already; give buffered writes their delay.
    deadline = time.monotonic() + 5
    while tree(secondary) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tree(secondary) == expected
    assert (secondary / "hard").stat().st_ino == (secondary / "target").stat().st_ino
    assert os.getxattr(secondary / "target", "user.k") == b"v"
    # The hole stayed a hole on the secondary.
    assert os.stat(secondary / "sparse").st_blocks * 512 < 1 << 20
    assert "bytes_sent=" in prim("stats")


def test_secondary_is_read_only_to_applications(pair):
    sim, _, _ = pair
    refused = sim.exec("node2", ["sh", "-c", f"echo x > {REP}/new"], check=False, capture=True)
    assert refused.returncode != 0 and "Read-only" in refused.stderr


# ---- full sync ----

def test_full_sync_copies_a_tree_to_an_empty_secondary(nodes):
    sim, start = nodes
    primary, secondary = sim.host_path("node1", REP), sim.host_path("node2", REP)
    lay_tree(primary)
    prim, second = start()
    assert second("fullsync") == "error fullsync: this is the secondary"
    assert prim("fullsync") == "error fullsync: no secondary attached"
    assert prim(f"attach {sim.addr('node2')} {PORT}") == "ok"
    done = full_sync(prim)
    expected = tree(primary)
    assert tree(secondary) == expected
    assert os.getxattr(secondary / "big0", "user.tag") == b"primary"
    assert os.stat(secondary / "sparse").st_blocks * 512 < 1 << 20       # the holes stayed holes
    assert done["files"] >= len(expected) and done["bytes_sent"] < done["bytes_scanned"]
    progress = "event progress sync_state=running sync_mode=full sync_files_scanned="
    assert any(e.startswith(progress) for e in prim.events)
    stats = prim.stats()
    assert stats["sync_state"] == "done" and int(stats["sync_bytes_sent"]) == done["bytes_sent"]
    assert int(stats["sync_files_total"]) >= len(expected) and int(stats["sync_started"]) > 0


def test_full_sync_sends_only_what_differs(nodes):
    sim, start = nodes
    primary, secondary = sim.host_path("node1", REP), sim.host_path("node2", REP)
    lay_tree(primary)
    shutil.copytree(primary, secondary, symlinks=True, ignore=shutil.ignore_patterns("fifo"),
                    dirs_exist_ok=True)
    for entry in primary.rglob("*"):                                     # owners too, as a copy keeps them
        if entry.name == "fifo":
            continue
        st = entry.lstat()
        os.lchown(secondary / entry.relative_to(primary), st.st_uid, st.st_gid)
        if not entry.is_symlink():
            os.chmod(secondary / entry.relative_to(primary), stat.S_IMODE(st.st_mode))
    (secondary / "extra" / "deep").mkdir(parents=True)                   # only on the secondary
    (secondary / "extra" / "deep" / "x").write_text("stale")
    (secondary / "d5" / "stray").write_text("stale")
    with open(secondary / "big0", "r+b") as f:                           # two blocks differ
        f.seek(100_000)
        f.write(b"X" * 10)
        f.seek(3 << 20)
        f.write(b"Y" * 10)
    with open(secondary / "big2", "ab") as f:                            # longer there
        f.write(b"tail")
    (secondary / "link-dir").unlink()                                    # wrong types
    (secondary / "link-dir").mkdir()
    (secondary / "fifo").write_text("a file")
    (secondary / "d2" / "e2").rename(secondary / "d2" / "was-e2")
    (secondary / "d2" / "e2").write_text("a file where a directory belongs")
    os.chmod(secondary / "d4" / "e4" / "f4", 0o600)
    os.removexattr(secondary / "big0", "user.tag")
    os.setxattr(secondary / "big1", "user.stale", b"1")
    os.utime(secondary / "big2", ns=(5, 5))
    prim, _ = start()
    assert prim(f"attach {sim.addr('node2')} {PORT}") == "ok"
    done = full_sync(prim)
    assert tree(secondary) == tree(primary)
    assert os.getxattr(secondary / "big0", "user.tag") == b"primary" and not os.listxattr(secondary / "big1")
    data = sum(p.stat().st_size for p in primary.rglob("*") if p.is_file() and not p.is_symlink())
    # Two blocks of big0 and the files of d2/e2, not the data set: under 10 %.
    assert done["bytes_sent"] < data / 10, (done, data)
    assert done["bytes_scanned"] >= data


@pytest.mark.parametrize("nbrei", ["1", "8"])                            # the walk alone; 8 workers
def test_full_sync_while_an_application_writes(nodes, nbrei):
    sim, start = nodes
    primary, secondary = sim.host_path("node1", REP), sim.host_path("node2", REP)
    lay_tree(primary)
    lay_tree(secondary, seed=2)                                          # the same names, other data
    prim, _ = start("--nbrei", nbrei)
    assert prim(f"attach {sim.addr('node2')} {PORT}") == "ok"
    writer = sim.popen("node1", ["python3", "-c", WRITER, REP, "4"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        full_sync(prim)
        out, _ = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0 and int(out) > 10
    # Every close waited for the secondary: with the writer gone, nothing is in flight.
    assert tree(secondary) == tree(primary)
