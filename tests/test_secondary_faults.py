"""Faults of the secondary's copy and of the replication processes on a simulated
mirror: a full or read-only disk on the secondary, a killed hakit-rfs on either node.
Nothing acknowledged is lost, the states tell the truth at every step, the mirror heals
by itself (docs/replication.md, "Secondary faults")."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cluster import MODULE, hk, install, mirror_conf, resources, state, wait_state
from tests.helpers import node_pids, wait_for
from tests.mirror_app import CONF, REP, App, assert_identical

pytestmark = pytest.mark.root

# Writes N MiB to a file, fsync after each; prints how many fsyncs returned, then done.
FSYNCED = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range(int(sys.argv[2])):
    os.write(fd, os.urandom(1 << 20))
    os.fsync(fd)
    print(i + 1, flush=True)
print("done", flush=True)
"""


def start_mirror(make_sim, tmp_path, size: str = "16M", big_mib: int = 0):
    """A mirror in sync, each node's copy on a file system of `size`; node1 primary with
    a file `big` of big_mib MiB (the application of mirror_app needs 4)."""
    sim = make_sim(nodes=2, daemon=True, paths=(REP,), sizes={REP: size})
    install(sim, tmp_path, ["node1", "node2"], mirror_conf(sim.spare_addr(0, 1), CONF))
    if big_mib:
        sim.exec("node1", ["sh", "-c", f"head -c {big_mib}M /dev/urandom > {REP}/big"])
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=60)
    wait_state(sim, "node1", "PRIM (Ready)")
    return sim


def write_fsynced(sim, node: str, name: str, mib: int) -> list[str]:
    run = sim.exec(node, ["python3", "-c", FSYNCED, f"{REP}/{name}", str(mib)], capture=True, check=False,
                   timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def fill(sim, node: str, leave_mib: int) -> Path:
    """The node's disk full but for leave_mib, by a file written behind hakit's back."""
    root = sim.host_path(node, REP)
    st = os.statvfs(root)
    filler = root / ".filler"
    with open(filler, "wb") as f:
        f.truncate(0)
        left = st.f_bavail * st.f_frsize - (leave_mib << 20)
        while left > 0:
            f.write(b"\0" * min(left, 1 << 20))
            left -= 1 << 20
    return filler


def log(sim, node: str) -> str:
    return hk(sim, node, "logview", "-m", MODULE)


def test_a_full_secondary_is_outdated_then_healed(make_sim, tmp_path):
    sim = start_mirror(make_sim, tmp_path)
    filler = fill(sim, "node2", leave_mib=2)
    # Every fsync returns: the primary goes on alone once the secondary knows it is outdated.
    assert write_fsynced(sim, "node1", "data", 6)[-1] == "done"
    wait_state(sim, "node2", "SECOND (NotReady)")
    wait_state(sim, "node1", "ALONE (Ready)")
    assert "the secondary failed to write data: No space left on device" in log(sim, "node1")
    node2_log = log(sim, "node2")
    assert "receiver failed to write data: No space left on device" in node2_log
    assert "This copy is outdated" in node2_log
    assert resources(sim, "node1")["rfs.state"] in ("detached", "syncing")
    for node in ("node1", "node2"):
        wait_for("failures counted",
                 lambda node=node: resources(sim, node).get("rfs.apply_failures", "0") != "0")
    # The primary tries again with backoff; space freed, the copy heals by itself.
    filler.unlink()
    wait_state(sim, "node2", "SECOND (Ready)", timeout=40)
    wait_state(sim, "node1", "PRIM (Ready)")
    assert_identical(sim, "node1", "node2")


def test_an_outdated_secondary_does_not_take_over(make_sim, tmp_path):
    sim = start_mirror(make_sim, tmp_path)
    fill(sim, "node2", leave_mib=2)
    assert write_fsynced(sim, "node1", "data", 6)[-1] == "done"
    wait_state(sim, "node2", "SECOND (NotReady)")
    sim.kill("node1")
    # Its copy lacks acknowledged writes: it waits for an operator instead of serving it.
    wait_state(sim, "node2", "WAIT (NotReady)", timeout=10)
    refused = hk(sim, "node2", "prim", "-m", MODULE, check=False)
    assert "prim refused" in refused and "outdated" in refused, refused
    assert state(sim, "node2") == "WAIT (NotReady)"
    hk(sim, "node2", "primforce", "-m", MODULE)
    wait_state(sim, "node2", "ALONE (Ready)")


def rfs_pid(sim, node: str) -> int:
    """The node's hakit-rfs server (not its watchdog), as the host numbers it."""
    pids = node_pids(sim, node, "hakit-rfs")
    assert pids, f"no hakit-rfs on {node}"
    return int(pids[0])


# Watches what the application would write to for `seconds`: the mount (served or dead),
# never the bare directory, whose device is argv[2].  Prints "bare N" and the errnos seen.
WATCH = r"""
import collections, os, sys, time
bare, seen = int(sys.argv[2]), collections.Counter()
end = time.monotonic() + float(sys.argv[3])
print("watching", flush=True)
while time.monotonic() < end:
    try:
        seen["bare" if os.stat(sys.argv[1]).st_dev == bare else "served"] += 1
    except OSError as exc:
        seen[os.strerror(exc.errno)] += 1
print(dict(seen), flush=True)
"""


def test_a_killed_secondary_rfs_is_restarted_and_resynchronised(make_sim, tmp_path):
    sim = start_mirror(make_sim, tmp_path, size="64M", big_mib=4)
    app = App(sim, "node1", seed=11)
    try:
        app.run_until(200)
        os.kill(rfs_pid(sim, "node2"), signal.SIGKILL)
        wait_for("the death noticed",
                 lambda: "hakit-rfs secondary died (killed by SIGKILL)" in log(sim, "node2"), timeout=2)
        assert state(sim, "node2") in ("SECOND (NotReady)", "SECOND (Ready)")
        app.run_until(200)
        wait_state(sim, "node2", "SECOND (Ready)", timeout=40)
        wait_state(sim, "node1", "PRIM (Ready)")
        app.run_until(200)
    finally:
        app.stop()
    node2_log = log(sim, "node2")
    assert "This copy is outdated" in node2_log and "synchronised again" in node2_log, node2_log
    assert "Rule rfs_failure true: action restart" in node2_log
    assert_identical(sim, "node1", "node2")


def test_a_killed_primary_rfs_never_uncovers_the_directory(make_sim, tmp_path):
    sim = start_mirror(make_sim, tmp_path, size="64M", big_mib=4)
    bare = os.stat(sim.host_path("node1", REP)).st_dev
    app = App(sim, "node1", seed=12)
    watch = sim.popen("node1", ["python3", "-c", WATCH, REP, str(bare), "6"], stdout=subprocess.PIPE,
                      text=True)
    try:
        app.run_until(200)
        assert watch.stdout is not None and watch.stdout.readline().strip() == "watching"
        os.kill(rfs_pid(sim, "node1"), signal.SIGKILL)
        wait_for("the death noticed",
                 lambda: "hakit-rfs primary died (killed by SIGKILL)" in log(sim, "node1"), timeout=2)
        seen, _ = watch.communicate(timeout=30)
    finally:
        app.stop()
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert "'bare'" not in seen, seen
    assert "Rule rfs_failure true: action restart" in log(sim, "node1")
    # The application restarted over a new layer; the secondary resynchronised.
    wait_state(sim, "node2", "SECOND (Ready)", timeout=40)
    wait_state(sim, "node1", "PRIM (Ready)")
    app = App(sim, "node1", seed=13)
    try:
        app.run_until(200)
    finally:
        app.stop()
    assert_identical(sim, "node1", "node2")
    hk(sim, "node1", "stop", "-m", MODULE)
    # Stopped, the directory is the directory again: no dead mount left beneath.
    sim.exec("node1", ["ls", REP])
    mounts = sim.exec("node1", ["cat", "/proc/self/mountinfo"], capture=True).stdout
    assert not [m for m in mounts.splitlines() if f" {REP} " in m and "fuse.hakit-rfs" in m], mounts


def test_a_lost_replication_lan_outdates_the_secondary_first(make_sim, tmp_path):
    """The guide's dedicated replication LAN: heartbeats on both LANs, the stream on the
    `flow` one.  The secondary's flow link goes down while the application writes with
    fsync; then the primary dies: the secondary must not serve its short copy."""
    sim = make_sim(nodes=2, lans=2, daemon=True, paths=(REP,))
    heart = '<heart><heartbeat name="default"/><heartbeat name="private" ident="flow"/></heart>'
    conf = mirror_conf(sim.spare_addr(0, 1), f'<rfs sendtimeout="2"><replicated dir="{REP}"/></rfs>')
    conf = conf.replace('<heart><heartbeat name="default"/></heart>', heart)
    install(sim, tmp_path, ["node1", "node2"], conf)
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=60)
    writer = sim.popen("node1", ["python3", "-c", FSYNCED, f"{REP}/data", "100000"], stdout=subprocess.PIPE,
                       text=True)
    acked = 0
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            acked = int(line)
            if acked == 20:
                break
        sim.exec("node2", ["ip", "link", "set", "eth1", "down"])
        # The stream stalls, sendtimeout detaches it, the secondary hears on the other LAN.
        wait_state(sim, "node2", "SECOND (NotReady)", timeout=15)
        for line in writer.stdout:
            acked = int(line)
            if acked >= 40:
                break
        sim.kill("node1")
    finally:
        writer.kill()
        writer.wait()
    assert acked >= 40
    wait_state(sim, "node2", "WAIT (NotReady)", timeout=10)
    assert "This copy is outdated" in log(sim, "node2")
    # Less than what was acknowledged: serving it would have lost acknowledged writes.
    assert sim.host_path("node2", REP).joinpath("data").stat().st_size < acked << 20


def test_a_read_only_secondary_disk_is_outdated_then_healed(make_sim, tmp_path):
    sim = start_mirror(make_sim, tmp_path)
    sim.remount("node2", REP, "ro")
    assert write_fsynced(sim, "node1", "data", 2)[-1] == "done"
    wait_state(sim, "node2", "SECOND (NotReady)")
    wait_state(sim, "node1", "ALONE (Ready)")
    assert "Read-only file system" in log(sim, "node1")
    assert "Read-only file system" in log(sim, "node2")
    sim.remount("node2", REP, "rw")
    wait_state(sim, "node2", "SECOND (Ready)", timeout=40)
    wait_state(sim, "node1", "PRIM (Ready)")
    assert_identical(sim, "node1", "node2")


def test_a_full_primary_disk_fails_the_application_and_keeps_the_copies_alike(make_sim, tmp_path):
    sim = start_mirror(make_sim, tmp_path)
    filler = fill(sim, "node1", leave_mib=2)
    run = sim.exec("node1", ["python3", "-c", FSYNCED, f"{REP}/data", "6"], capture=True, check=False)
    assert run.returncode != 0 and "No space left on device" in run.stderr, run.stderr
    filler.unlink()
    # The secondary got what the primary wrote, no more: both copies alike, still in sync.
    assert state(sim, "node2") == "SECOND (Ready)" and state(sim, "node1") == "PRIM (Ready)"
    for node in ("node1", "node2"):
        sim.host_path(node, REP).joinpath(".filler").unlink(missing_ok=True)
    assert_identical(sim, "node1", "node2")
