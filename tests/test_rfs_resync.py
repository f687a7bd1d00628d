"""The primary's journal (native/rfs/dirty.c) and the incremental resync, between two
simulated nodes running hakit-rfs by hand: what changes while the secondary is away is
all that travels when it returns, the journal survives a crash of the primary, and a
secondary lost in the middle of live writes still ends identical."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hakit.rfs.daemon import rfs_binary
from hakit.testing.rfsctl import RfsControl
from hakit.testing.sim import Sim
from tests.mirror_app import APP
from tests.rfs_pair import PORT, REP, WRITER, lay_tree, tree

pytestmark = pytest.mark.root

STATE = "/var/lib/hakit/rfs-state"
CTL = "/var/lib/hakit/rfs.ctl"


@dataclass
class Pair:
    """Either side started and stopped at will; the primary keeps its journal in STATE."""

    sim: Sim
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    ctls: dict[str, RfsControl] = field(default_factory=dict)
    others: list[RfsControl] = field(default_factory=list)  # more connections, closed with the pair

    def start(self, node: str, *extra: str, binary: Path | None = None, env: dict[str, str] | None = None
              ) -> RfsControl:
        role = ["primary", "--state", STATE] if node == "node1" else [
            "secondary", "--listen", f"{self.sim.addr('node2')}:{PORT}", "--insecure"]
        argv = [str(binary or rfs_binary()), role[0], "--dir", REP, "--ctl", CTL, "--xattr", *role[1:],
                *extra]
        self.procs[node] = self.sim.popen(node, argv, env=env)
        self.ctls[node] = RfsControl(self.sim.host_path(node, CTL))
        return self.ctls[node]

    def stop(self, node: str) -> None:
        with self.ctls.pop(node) as ctl:
            assert ctl("stop") == "ok"
        assert self.procs.pop(node).wait(timeout=20) == 0

    def kill(self, node: str) -> None:
        """As a crash: SIGKILL (hakit-rfs's watchdog unmounts what it leaves)."""
        self.ctls.pop(node).close()
        proc = self.procs.pop(node)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while os.path.ismount(self.sim.host_path(node, REP)) and time.monotonic() < deadline:
            time.sleep(0.05)

    def control(self, node: str) -> RfsControl:
        self.others.append(RfsControl(self.sim.host_path(node, CTL)))
        return self.others[-1]

    def attach(self) -> RfsControl:
        prim = self.ctls["node1"]
        assert prim(f"attach {self.sim.addr('node2')} {PORT}") == "ok"
        return prim

    def wait_detached(self) -> dict[str, str]:
        deadline = time.monotonic() + 10
        while (stats := self.ctls["node1"].stats())["attached"] != "0":
            assert time.monotonic() < deadline, "the primary did not notice the secondary left"
            time.sleep(0.05)
        return stats


def sync(prim: RfsControl, command: str) -> dict[str, int]:
    reply = prim(command)
    assert reply.startswith("ok "), reply
    return {k: int(v) for k, v in (kv.split("=", 1) for kv in reply.split()[1:])}


@contextlib.contextmanager
def running_pair(sim: Sim) -> Iterator[Pair]:
    p = Pair(sim)
    try:
        yield p
        for node in list(p.ctls):
            p.stop(node)
    finally:
        for ctl in [*p.ctls.values(), *p.others]:
            ctl.close()
        for proc in p.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def pair(make_sim) -> Iterator[Pair]:
    with running_pair(make_sim(nodes=2, paths=(REP,))) as p:
        yield p


@pytest.fixture
def small_pair(make_sim) -> Iterator[Pair]:
    """The secondary's (and the primary's) copy on a 16 MiB file system of its own."""
    with running_pair(make_sim(nodes=2, paths=(REP,), sizes={REP: "16M"})) as p:
        yield p


CHANGES = r"""
import os, random, sys
root = sys.argv[1]
p = lambda *a: os.path.join(root, *a)
rnd = random.Random(3)
with open(p("big0"), "r+b") as f:                          # 100 scattered 4 KiB writes
    for _ in range(100):
        f.seek(rnd.randrange(0, os.path.getsize(p("big0")) // 4096) * 4096)
        f.write(rnd.randbytes(4096))
with open(p("d1/e1/new"), "wb") as f:                       # a new file
    f.write(b"n" * 30000)
os.unlink(p("d2/e2/f2"))                                    # gone
os.rename(p("d3/e3/f3"), p("d4/renamed"))                   # moved across directories
os.chmod(p("d5/e5/f5"), 0o640)                              # attributes only
os.truncate(p("big1"), 4096)                                # cut, then regrown: zeros
os.truncate(p("big1"), 1 << 20)
os.makedirs(p("newdir/sub"))                                # a new subtree
with open(p("newdir/sub/x"), "w") as f:
    f.write("x")
os.rename(p("d6"), p("d6-moved"))                           # a whole directory moves
os.symlink("big0", p("d7/link"))
"""


def test_resync_sends_only_what_changed(pair):
    primary, secondary = pair.sim.host_path("node1", REP), pair.sim.host_path("node2", REP)
    lay_tree(primary)
    pair.start("node2")
    prim = pair.start("node1")
    assert prim("resync tag=1") == "error resync: no secondary attached"
    pair.attach()
    assert prim("resync tag=1") == "error resync: no journal: a full sync is needed"
    full = sync(prim, "fullsync tag=1")
    stats = prim.stats()
    assert stats["journal"] == "clean" and stats["journal_tag"] == "1"
    pair.stop("node2")
    stats = pair.wait_detached()
    assert stats["journal"] == "recording"
    pair.sim.exec("node1", ["python3", "-c", CHANGES, REP])
    diff = prim("rfsdiff")
    assert diff.startswith("ok mode=journal "), diff
    pair.start("node2")
    pair.attach()
    inc = sync(prim, "resync tag=2")
    assert tree(secondary) == tree(primary)
    # 100 blocks of 4 KiB, a 30 kB file, the regrown zeros (holes there), small entries and
    # the moved directory's files: a small fraction of what the full sync sent.
    assert inc["bytes_sent"] < full["bytes_sent"] / 5, (inc, full)
    assert inc["bytes_sent"] < 3 << 20, inc
    stats = prim.stats()
    assert stats["journal"] == "clean" and stats["journal_tag"] == "2" and stats["sync_mode"] == "incremental"
    # In sync now: a comparison finds nothing to send.
    assert prim("rfsdiff").startswith("ok mode=compare paths=0 bytes=0 ")


def test_journal_survives_a_crash_of_the_primary(pair):
    primary, secondary = pair.sim.host_path("node1", REP), pair.sim.host_path("node2", REP)
    lay_tree(primary)
    pair.start("node2")
    prim = pair.start("node1")
    pair.attach()
    sync(prim, "fullsync tag=7")
    pair.stop("node2")
    pair.wait_detached()
    pair.sim.exec("node1", ["python3", "-c", CHANGES, REP])
    pair.kill("node1")
    prim = pair.start("node1")
    stats = prim.stats()
    assert stats["journal"] == "recording" and stats["journal_tag"] == "7", stats
    pair.sim.exec("node1", ["sh", "-c", f"printf again >> {REP}/big2"])   # and after the restart
    pair.start("node2")
    pair.attach()
    inc = sync(prim, "resync tag=8")
    assert tree(secondary) == tree(primary)
    # The crash lost the exact blocks: the journal's extents are compared, only what differs travels.
    assert inc["bytes_sent"] < 8 << 20, inc


def test_secondary_lost_during_live_writes(pair):
    primary, secondary = pair.sim.host_path("node1", REP), pair.sim.host_path("node2", REP)
    lay_tree(primary)
    pair.start("node2")
    prim = pair.start("node1")
    pair.attach()
    sync(prim, "fullsync tag=1")
    writer = pair.sim.popen("node1", ["python3", "-c", WRITER, REP, "3"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        pair.kill("node2")                                  # un-acked frames in flight
        pair.wait_detached()
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert prim.stats()["journal"] == "recording"
    pair.start("node2")
    pair.attach()
    sync(prim, "resync tag=2")
    assert tree(secondary) == tree(primary)


def test_no_journal_without_lineage(pair):
    """A primary that never synchronised this secondary has nothing to resync from."""
    pair.start("node2")
    prim = pair.start("node1")
    assert prim.stats()["journal"] == "invalid"
    assert prim("rfsdiff").startswith("ok mode=none ")
    pair.stop("node1")
    prim = pair.start("node1", "--adopt", "5")               # an in-sync copy promoted
    assert prim.stats()["journal"] == "recording" and prim.stats()["journal_tag"] == "5"


@pytest.mark.parametrize("delay", [0.05, 0.15])
def test_secondary_stopped_during_buffered_writes(pair, delay):
    """Writes queued or un-acked when the secondary stops are in the journal (the frames
    a dying session kept), so the resync carries them."""
    pair.sim.exec("node1", ["sh", "-c", f"head -c 64M /dev/urandom > {REP}/big"])
    primary, secondary = pair.sim.host_path("node1", REP), pair.sim.host_path("node2", REP)
    pair.start("node2")
    prim = pair.start("node1")
    pair.attach()
    sync(prim, "fullsync tag=1")
    app = pair.sim.popen("node1", ["python3", "-c", APP, REP, "1"], stdout=subprocess.PIPE, text=True)
    try:
        for line in app.stdout:
            if int(line) >= 300:
                break
        time.sleep(delay)
        pair.stop("node2")
        pair.wait_detached()
        for line in app.stdout:
            if int(line) >= 800:
                break
    finally:
        app.kill()
        app.wait()
    pair.start("node2")
    pair.attach()
    sync(prim, "resync tag=2")
    assert tree(secondary) == tree(primary)


def test_a_secondary_that_fails_an_operation_is_detached_and_repaired(pair):
    """The copies were identical (journal clean) and the secondary cannot apply an
    operation the primary did: it must not pass for identical any more, and the
    incremental resync that follows repairs exactly that path."""
    primary, secondary = pair.sim.host_path("node1", REP), pair.sim.host_path("node2", REP)
    (primary / "kept").write_text("kept\n")
    pair.start("node2")
    prim = pair.start("node1")
    pair.attach()
    sync(prim, "fullsync tag=4")
    # Made behind the stream's back: the secondary's creation of that name fails (EEXIST).
    (secondary / "stray").write_text("the secondary's own\n")
    pair.sim.exec("node1", ["sh", "-c", f"echo primary > {REP}/stray"])
    stats = pair.wait_detached()
    assert stats["journal"] == "recording" and stats["journal_tag"] == "4", stats
    assert int(stats["apply_failures"]) >= 1 and int(stats["dirty_paths"]) >= 1, stats
    diff = prim("rfsdiff")
    assert diff.startswith("ok mode=journal ") and "paths=0 " not in diff, diff
    pair.attach()
    inc = sync(prim, "resync tag=5")
    assert (secondary / "stray").read_text() == "primary\n"
    assert tree(secondary) == tree(primary)
    assert prim.stats()["journal"] == "clean" and inc["bytes_sent"] < 1 << 20, inc


def test_a_full_secondary_is_detached_and_nothing_is_acknowledged_before_fenced(small_pair):
    """Buffered writes the secondary cannot apply (its disk full): the first failed ack
    detaches it, names the path and the error on both sides, puts the path in the
    journal; with --fence, an fsync waiting on it returns only once told the secondary
    is outdated ("fenced"); once space is freed, a resync makes the copies identical."""
    pair = small_pair
    primary, secondary = pair.sim.host_path("node1", REP), pair.sim.host_path("node2", REP)
    pair.start("node2")
    prim = pair.start("node1", "--fence")
    pair.attach()
    sync(prim, "fullsync tag=7")
    filler = secondary / "filler"  # the secondary's disk, behind the stream: 4 MiB left
    filler.write_bytes(b"\0" * (12 << 20))
    sec = pair.control("node2")

    def while_held(stats: dict[str, str], writer: subprocess.Popen) -> None:
        assert int(stats["apply_failures"]) >= 1, stats
        assert stats["journal"] == "recording" and stats["journal_tag"] == "7", stats
        # The writer's fsync waits: nothing the secondary lacks is acknowledged yet.
        time.sleep(0.5)
        assert writer.poll() is None
        assert sec.stats()["rx_failures"] != "0"

    write_through_fence(pair, "data", 8, while_held)
    assert any("the secondary failed to write data: No space left on device" in e for e in prim.events), \
        prim.events
    sec("stats")
    assert any("receiver failed to write data: No space left on device" in e for e in sec.events), sec.events
    diff = prim("rfsdiff")
    assert diff.startswith("ok mode=journal ") and "paths=0 " not in diff, diff
    filler.unlink()
    pair.attach()
    sync(prim, "resync tag=8")
    assert tree(secondary) == tree(primary)


def write_through_fence(pair: Pair, name: str, mib: int,
                        while_held: Callable[[dict[str, str], subprocess.Popen], None]) -> None:
    """Writes `mib` MiB to REP/name on the primary (started with --fence), an fsync after
    each, which must lose the secondary: the writer is held until 'fenced', then ends."""
    writer = pair.sim.popen("node1", ["python3", "-c", FSYNCED, f"{REP}/{name}", str(mib)],
                            stdout=subprocess.PIPE, text=True)
    try:
        stats = pair.wait_detached()
        assert stats["fencing"] == "1", stats
        while_held(stats, writer)
        assert pair.ctls["node1"]("fenced") == "ok"
        out, _ = writer.communicate(timeout=20)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0 and out.split() == ["done", str(mib)], out
    assert pair.ctls["node1"].stats()["fencing"] == "0"


# Writes MiB after MiB with an fsync after each; prints "done N" when all returned.
FSYNCED = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
n = int(sys.argv[2])
for i in range(n):
    os.write(fd, os.urandom(1 << 20))
    os.fsync(fd)
print("done", n, flush=True)
"""


def test_a_journal_that_cannot_be_written_is_never_taken_for_one(make_sim):
    """The primary's journal on a full disk while the secondary is away: the marks are
    lost, so the journal says so (invalid), refuses an incremental resync, and only a
    full one makes the secondary identical again."""
    state = "/srv/state"
    sim = make_sim(nodes=2, paths=(REP, state), sizes={REP: "16M", state: "1M"})
    with running_pair(sim) as pair:
        primary, secondary = sim.host_path("node1", REP), sim.host_path("node2", REP)
        pair.start("node2")
        prim = pair.start("node1", "--state", state)
        pair.attach()
        sync(prim, "fullsync tag=3")
        disk = sim.host_path("node1", state)
        with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        pair.stop("node2")
        pair.wait_detached()
        sim.exec("node1", ["sh", "-c", f"for i in $(seq 20); do head -c 64k /dev/urandom > {REP}/f$i; done"])
        stats = prim.stats()
        assert stats["journal"] == "invalid", stats
        pair.start("node2")
        pair.attach()
        assert prim("resync tag=4").startswith("error resync: no journal")
        sync(prim, "fullsync tag=4")
        assert tree(secondary) == tree(primary)


FAULTS_BINARY = Path(__file__).resolve().parents[1] / "build" / "rfs-faults" / "hakit-rfs"


def test_an_input_output_error_on_the_secondary_detaches_it(pair):
    """EIO cannot be caused for real here: the test build's receiver injects it
    (HAKIT_RFS_FAULT, make rfs-faults) for every operation on a path naming `bad`."""
    assert FAULTS_BINARY.exists(), f"{FAULTS_BINARY} is missing: make rfs-faults builds it"
    primary, secondary = pair.sim.host_path("node1", REP), pair.sim.host_path("node2", REP)
    pair.start("node2", binary=FAULTS_BINARY, env={"HAKIT_RFS_FAULT": f"{errno.EIO}:bad"})
    prim = pair.start("node1", "--fence")
    pair.attach()
    sync(prim, "fullsync tag=2")
    pair.sim.exec("node1", ["python3", "-c", FSYNCED, f"{REP}/good", "1"])
    assert prim.stats()["attached"] == "1"
    write_through_fence(pair, "bad", 2, lambda stats, _: None)
    assert any("bad: Input/output error" in e for e in prim.events), prim.events
    pair.stop("node2")
    pair.start("node2")  # the fault gone
    pair.attach()
    sync(prim, "resync tag=3")
    assert tree(secondary) == tree(primary)
