"""A module process killed while the application writes (issue 17): the primary's
application, VIP and hakit-rfs go on, the respawned module process takes them over, the
secondary waits for it while it still hears the replication stream, and nothing the
application saw acknowledged is missing on the secondary (docs/engine.md, "A module
process that dies")."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.cluster import MODULE, history, hk, state, trace, wait_state
from tests.helpers import wait_for
from tests.mirror_app import REP
from tests.test_engine import module_pid
from tests.test_secondary_faults import rfs_pid, start_mirror

pytestmark = pytest.mark.root

# Appends numbered records to a file, each fsynced: prints the number once acknowledged.
# Any error ends it with the error on stderr and status 1.
WRITER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
n = 0
while True:
    n += 1
    os.write(fd, b"record %08d\n" % n)
    os.fsync(fd)
    print(n, flush=True)
    time.sleep(0.005)
"""


class Writer:
    def __init__(self, sim, node: str) -> None:
        self.proc = sim.popen(node, ["python3", "-c", WRITER, f"{REP}/records"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        self.acked = 0

    def until(self, more: int) -> None:
        """Until `more` records more are acknowledged."""
        assert self.proc.stdout is not None
        target = self.acked + more
        for line in self.proc.stdout:
            self.acked = int(line)
            if self.acked >= target:
                return
        raise AssertionError(f"the writer stopped after record {self.acked}: {self.proc.stderr.read()}")

    def stop(self) -> None:
        """Ends it; it must have been running without an error."""
        alive = self.proc.poll() is None
        self.proc.kill()
        _, err = self.proc.communicate()
        assert alive, f"the writer ended by itself after record {self.acked}: {err}"


def respawned(sim, node: str, killed: int) -> bool:
    """Whether another module process than `killed` runs on the node (the cleanup's aside)."""
    try:
        return module_pid(sim, node) != killed
    except AssertionError:  # between two
        return False


# The receiver's stats line, from its control socket.
STATS = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"stats\n")
print(s.makefile().readline().strip())
"""


def rx_idle_ms(sim, node: str) -> int:
    line = sim.exec(node, ["python3", "-c", STATS, f"/run/hakit/rfs/{MODULE}.0.ctl"], capture=True).stdout
    return int(dict(w.split("=", 1) for w in line.split() if "=" in w)["rx_idle_ms"])


def records(sim, node: str) -> list[int]:
    data = (sim.host_path(node, REP) / "records").read_bytes()
    return [int(line.split()[1]) for line in data.splitlines()]


def assert_has_every_acknowledged(sim, node: str, acked: int) -> None:
    got = records(sim, node)
    assert got[:acked] == list(range(1, acked + 1)), f"{node} lacks acknowledged records (of {acked})"


def test_a_killed_primary_module_process_is_resumed_while_the_application_writes(make_sim, tmp_path):
    sim = start_mirror(make_sim, tmp_path)
    # Nothing written: the idle stream's keepalives are what the secondary hears (once the
    # synchronisation's last frames are acknowledged, which a loaded host may take a while).
    time.sleep(0.5)
    wait_for("keepalives on the idle stream", lambda: 0 <= rx_idle_ms(sim, "node2") < 200, timeout=10)
    rfs = rfs_pid(sim, "node1")
    secondary = [history(sim, "node2", f"module.{r}") for r in ("state", "status")]
    writer = Writer(sim, "node1")
    try:
        writer.until(50)
        killed = module_pid(sim, "node1")
        # hakitd held for a second: the respawn comes later than the heartbeat timeout, so
        # the secondary must wait on the stream it still hears rather than take over.
        hakitd = int(sim.host_path("node1", "/run/hakit/hakitd.pid").read_text())
        os.kill(hakitd, signal.SIGSTOP)
        try:
            os.kill(killed, signal.SIGKILL)
            began = time.monotonic()
            writer.until(20)  # acknowledged while no module process runs
            time.sleep(max(0.0, began + 1.0 - time.monotonic()))
        finally:
            os.kill(hakitd, signal.SIGCONT)
        wait_for("a new module process", lambda: respawned(sim, "node1", killed), timeout=10)
        wait_state(sim, "node1", "PRIM (Ready)", timeout=15)
        resumed_s = time.monotonic() - began
        writer.until(50)
    finally:
        writer.stop()
    # The same hakit-rfs served all along; no start script ran again, none was stopped.
    assert rfs_pid(sim, "node1") == rfs
    assert [t.strip() for t in trace(sim, "node1") if t.startswith(("start_", "stop_"))] == ["start_prim"]
    log1 = hk(sim, "node1", "logview", "-m", MODULE)
    assert "a new one takes over what it ran" in log1 and "Resumed in place of the module process" in log1
    # The secondary waited for it, SECOND (Ready) all along.
    assert [history(sim, "node2", f"module.{r}") for r in ("state", "status")] == secondary
    assert state(sim, "node2") == "SECOND (Ready)"
    assert "waiting up to 5 s for its module process" in hk(sim, "node2", "logview", "-m", MODULE)
    assert_has_every_acknowledged(sim, "node2", writer.acked)
    print(f"resumed PRIM (Ready) {resumed_s:.2f} s after the kill")


def test_a_killed_secondary_module_process_heals_while_the_application_writes(make_sim, tmp_path):
    sim = start_mirror(make_sim, tmp_path)
    writer = Writer(sim, "node1")
    try:
        writer.until(50)
        killed = module_pid(sim, "node2")
        os.kill(killed, signal.SIGKILL)
        writer.until(20)
        # The primary goes on alone, then synchronises the secondary's new process.
        wait_for("a new module process", lambda: respawned(sim, "node2", killed), timeout=10)
        wait_state(sim, "node2", "SECOND (Ready)", timeout=30)
        wait_state(sim, "node1", "PRIM (Ready)")
        writer.until(50)
    finally:
        writer.stop()
    assert_has_every_acknowledged(sim, "node2", writer.acked)


def test_a_primary_whose_peer_took_over_meanwhile_gives_way_and_loses_nothing(make_sim, tmp_path):
    """hakitd frozen while the primary's module process is dead: the secondary's grace
    ends, it takes over; the resumed primary gives way, and its writer's held writes fail
    rather than be acknowledged."""
    sim = start_mirror(make_sim, tmp_path)
    hakitd = int(sim.host_path("node1", "/run/hakit/hakitd.pid").read_text())
    writer = Writer(sim, "node1")
    try:
        writer.until(50)
        os.kill(hakitd, signal.SIGSTOP)
        try:
            os.kill(module_pid(sim, "node1"), signal.SIGKILL)
            wait_state(sim, "node2", "ALONE (Ready)", timeout=15)
        finally:
            os.kill(hakitd, signal.SIGCONT)
        wait_state(sim, "node1", "SECOND (Ready)", timeout=30)
        log = hk(sim, "node1", "logview", "-m", MODULE)
        assert "took over while this node's module process was down" in log
    finally:
        writer.proc.kill()
        out, _ = writer.proc.communicate()
    acked = max([writer.acked, *(int(n) for n in out.split())])
    assert_has_every_acknowledged(sim, "node2", acked)


def test_an_adopted_rfs_that_dies_is_repaired_over_its_dead_mount(make_sim, tmp_path):
    """The adopted hakit-rfs is watched as the module's own: its death is noticed, and the
    new one mounts over the dead mount from the real directory taken back from it."""
    sim = start_mirror(make_sim, tmp_path)
    killed = module_pid(sim, "node1")
    os.kill(killed, signal.SIGKILL)
    wait_for("a new module process", lambda: respawned(sim, "node1", killed), timeout=10)
    wait_state(sim, "node1", "PRIM (Ready)", timeout=15)
    adopted = rfs_pid(sim, "node1")
    os.kill(adopted, signal.SIGKILL)
    died = "hakit-rfs primary died (ended; started by an earlier module process"
    wait_for("the death noticed", lambda: died in hk(sim, "node1", "logview", "-m", MODULE), timeout=5)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=30)
    wait_state(sim, "node1", "PRIM (Ready)", timeout=15)
    assert rfs_pid(sim, "node1") != adopted
    sim.exec("node1", ["sh", "-c", f"echo after > {REP}/after && sync {REP}/after"])
    wait_for("replicated", lambda: (sim.host_path("node2", REP) / "after").exists(), timeout=5)
