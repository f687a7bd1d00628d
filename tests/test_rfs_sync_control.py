"""Synchronisation under control (docs/replication.md, "Tuning"): the bandwidth caps
(--rei-bw-percent, --rei-allowed-bw, `reibw` on the control socket) hold.  Several
threads synchronising files (--nbrei): test_rfs_mirror.py's full sync while an
application writes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from hakit.testing.rfsctl import RfsControl
from tests.rfs_pair import PORT, REP, full_sync, tree

MIB = 1 << 20

# Writes a 64 KiB block through the mount every 10 ms (about 6 MB/s), until killed: at
# 20 %, the sync may send a quarter of that, far less than it could.
APP = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
block = os.urandom(64 << 10)
n = 0
while True:
    os.pwrite(fd, block, (n % 256) * len(block))
    n += 1
    time.sleep(0.01)
"""


def lay_files(root, count: int, size: int) -> None:
    (root / "data").mkdir()
    for i in range(count):
        (root / "data" / f"f{i}").write_bytes(bytes([i % 256]) * size)


def test_the_absolute_cap_holds(nodes):
    sim, start = nodes
    primary = sim.host_path("node1", REP)
    lay_files(primary, 8, MIB)
    prim, _ = start("--rei-allowed-bw", "4096")                          # 4 MiB/s
    assert prim(f"attach {sim.addr('node2')} {PORT}") == "ok"
    done = full_sync(prim)
    assert done["bytes_sent"] == 8 * MIB
    # A burst of 0.1 s, then 4 MiB/s at most: noise can only make it slower.
    assert done["elapsed_ms"] >= (8 - 0.4 - 1) / 4 * 1000, done
    assert tree(sim.host_path("node2", REP)) == tree(primary)


def test_the_share_holds_while_the_application_writes_and_lifts_after(nodes):
    sim, start = nodes
    primary = sim.host_path("node1", REP)
    lay_files(primary, 48, MIB)
    prim, _ = start("--rei-bw-percent", "20", "--nbrei", "3")
    assert prim("reibw") == "ok percent=20 allowed_kbps=0"
    assert prim("reibw 0 5").startswith("error reibw: ")
    assert prim(f"attach {sim.addr('node2')} {PORT}") == "ok"
    app = sim.popen("node1", ["python3", "-c", APP, f"{REP}/app.log"])
    with RfsControl(sim.host_path("node1", "/var/lib/hakit/rfs.ctl")) as watch, ThreadPoolExecutor(1) as pool:
        try:
            time.sleep(0.5)
            before = watch.stats()
            running = pool.submit(prim, "fullsync")
            time.sleep(0.3)
            first = watch.stats()
            time.sleep(2)
            second = watch.stats()
        finally:
            app.kill()
            app.wait()
        # The application stopped: the sync takes the whole link and ends.
        reply = running.result(timeout=60)
    # At most 20 %: a quarter of what the application wrote meanwhile, plus the 4 MiB
    # the cap lets through at once and a request in flight per thread.
    synced = int(second["sync_bytes_sent"]) - int(first["sync_bytes_sent"])
    wrote = int(second["write_bytes"]) - int(first["write_bytes"])
    assert wrote > 0 and second["sync_state"] == "running", (first, second)
    assert synced <= wrote / 4 + 8 * MIB, (synced, wrote)
    early = int(first["write_bytes"]) - int(before["write_bytes"])
    assert int(first["sync_bytes_sent"]) <= early / 4 + 8 * MIB
    assert reply.startswith("ok files="), reply
    assert tree(sim.host_path("node2", REP)) == tree(primary)
