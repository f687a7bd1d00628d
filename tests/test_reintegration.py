"""Reintegration of a mirror's secondary on a simulated cluster: incremental from the
primary's journal when the secondary's copy is of the journal's lineage, full otherwise;
`hakit second fullsync`, `hakit rfsdiff`, `hakit rfsprogress`, the rfs.* resources.
The lineage rules themselves: docs/replication.md, "Reintegration"."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from hakit.rfs.mirror import choose_mode
from hakit.rfs.progress import sync_line
from tests.cluster import MODULE, history, hk, install, mirror_conf, resources, state, wait_state
from tests.helpers import wait_for
from tests.mirror_app import CONF, REP, App, assert_identical

DATA_MIB = 64


# -- pure logic


@pytest.mark.parametrize(("stats", "base", "asked", "mode"), [
    ({"journal": "recording", "journal_tag": "4"}, 4, False, "incremental"),
    ({"journal": "recording", "journal_tag": "4"}, 4, True, "full"),     # second fullsync
    ({"journal": "recording", "journal_tag": "4"}, 0, False, "full"),    # a copy of no lineage
    ({"journal": "recording", "journal_tag": "3"}, 4, False, "full"),    # another lineage
    ({"journal": "clean", "journal_tag": "4"}, 4, False, "full"),        # nothing recorded
    ({"journal": "invalid", "journal_tag": "0"}, 4, False, "full"),
    ({}, 4, False, "full"),                                              # a daemon without journal
])
def test_the_mode_follows_the_lineage(stats, base, asked, mode):
    assert choose_mode(stats, base, asked)[0] == mode


def test_the_progress_line():
    values = {"rfs.sync_state": "running", "rfs.sync_mode": "incremental",
              "rfs.sync_bytes_scanned": str(1288490189), "rfs.sync_bytes_total": str(2 << 30),
              "rfs.sync_files_scanned": "1532", "rfs.sync_elapsed_ms": "13000"}
    assert sync_line(values) == ("sync: incremental 1.2 GiB / 2.0 GiB (60 %), 1532 files, "
                                 "94.5 MiB/s, ETA 9 s")
    assert sync_line({**values, "rfs.sync_state": "done"}) is None


# -- on a simulated cluster


def start_pair(make_sim, tmp_path, extra: str = ""):
    sim = make_sim(nodes=2, daemon=True, paths=(REP,))
    install(sim, tmp_path, ["node1", "node2"], mirror_conf(sim.spare_addr(0, 1), CONF + extra))
    sim.exec("node1", ["sh", "-c", f"head -c {DATA_MIB}M /dev/urandom > {REP}/big"])
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=60)
    wait_state(sim, "node1", "PRIM (Ready)")
    assert resources(sim, "node1")["rfs.sync_mode"] == "full"  # the first: node2's copy had no lineage
    return sim


def assert_synced(sim, primary: str, mode: str) -> dict[str, str]:
    res = resources(sim, primary)
    assert res["rfs.sync_mode"] == mode, res
    assert res["rfs.sync_state"] == "done"
    assert int(res["rfs.sync_files"]) >= 0 and int(res["rfs.sync_started"]) > 0
    assert float(res["rfs.sync_elapsed_s"]) >= 0
    if mode == "incremental":
        # Only what the journal recorded travelled, and only that was read: a small part
        # of the data, where a full synchronisation reads all of it on both sides.
        assert int(res["rfs.sync_bytes_sent"]) < (DATA_MIB << 20) // 4, res
        assert int(res["rfs.sync_bytes_scanned"]) < (DATA_MIB << 20) // 4, res
    return res


@pytest.mark.root
def test_a_stopped_secondary_returns_incrementally(make_sim, tmp_path):
    sim = start_pair(make_sim, tmp_path)
    app = App(sim, "node1", seed=1)
    try:
        app.run_until(300)
        wait_for("bandwidth measured", lambda: any(
            v != "0" for _, v in history(sim, "node1", "rfs.netout_bandwidth")))
        wait_for("secondary bandwidth measured", lambda: any(
            v != "0" for _, v in history(sim, "node2", "rfs.netin_bandwidth")))
        # rfsdiff is for the primary.
        refused = hk(sim, "node2", "rfsdiff", "-m", MODULE, check=False)
        assert "run it on the primary" in refused
        hk(sim, "node2", "stop", "-m", MODULE)
        wait_state(sim, "node1", "ALONE (Ready)")
        app.run_until(500)
        # Alone, the primary's journal holds what node2 missed.
        diff = hk(sim, "node1", "rfsdiff", "-m", MODULE)
        recorded = re.search(rf"{REP}: journal, (\d+) entries, ([\d.]+) (B|KiB|MiB) recorded while alone",
                             diff)
        assert recorded and int(recorded[1]) > 0 and float(recorded[2]) > 0, diff
        assert "estimated time:" in diff  # the first sync sent the data: its rate is known
        gone = hk(sim, "node2", "rfsdiff", "-m", MODULE, check=False)
        assert "not started on this node" in gone
        starting = sim.popen("node2", ["hakit", "start", "-m", MODULE])
        wait_for("node2 starting", lambda: not state(sim, "node2").startswith("STOP"))
        follow = sim.popen("node2", ["hakit", "rfsprogress", "-m", MODULE], stdout=subprocess.PIPE, text=True)
        assert starting.wait(timeout=60) == 0
        out, _ = follow.communicate(timeout=30)
        assert follow.returncode == 0 and "SECOND (Ready), synchronised: incremental" in out, out
        app.run_until(200)
    finally:
        app.stop()
    assert_synced(sim, "node1", "incremental")
    assert resources(sim, "node2")["rfs.sync_mode"] == "incremental"  # the primary's progress, seen there
    assert_identical(sim, "node1", "node2")
    log = hk(sim, "node1", "logview", "-m", MODULE)
    assert "incremental synchronisation (lineage" in log


@pytest.mark.root
def test_a_killed_secondary_returns_incrementally(make_sim, tmp_path):
    sim = start_pair(make_sim, tmp_path)
    app = App(sim, "node1", seed=2)
    try:
        app.run_until(300)
        sim.kill("node2")
        wait_state(sim, "node1", "ALONE (Ready)")
        app.run_until(300)
        sim.revive("node2")
        hk(sim, "node2", "start", "-m", MODULE)
        wait_state(sim, "node2", "SECOND (Ready)", timeout=60)
        app.run_until(200)
    finally:
        app.stop()
    assert_synced(sim, "node1", "incremental")
    assert_identical(sim, "node1", "node2")


@pytest.mark.root
def test_a_killed_primary_returns_as_secondary_fully(make_sim, tmp_path):
    sim = start_pair(make_sim, tmp_path)
    app = App(sim, "node1", seed=3)
    try:
        app.run_until(300)
        sim.kill("node1")  # the application dies with its node
    finally:
        app.stop()
    wait_state(sim, "node2", "ALONE (Ready)")
    app = App(sim, "node2", seed=4)
    try:
        app.run_until(200)
        sim.revive("node1")
        hk(sim, "node1", "start", "-m", MODULE)
        wait_state(sim, "node1", "SECOND (Ready)", timeout=60)
        app.run_until(100)
    finally:
        app.stop()
    # node1 ran ahead as primary (writes node2 may never have had): its copy has no lineage.
    assert_synced(sim, "node2", "full")
    assert_identical(sim, "node2", "node1")


@pytest.mark.root
def test_swap_and_swap_back_reintegrate_incrementally(make_sim, tmp_path):
    sim = start_pair(make_sim, tmp_path)
    for primary, secondary, seed in (("node1", "node2", 5), ("node2", "node1", 6)):
        app = App(sim, primary, seed)
        try:
            app.run_until(300)
        finally:
            app.stop()
        hk(sim, primary, "swap", "-m", MODULE)
        wait_state(sim, secondary, "PRIM (Ready)", timeout=60)
        wait_state(sim, primary, "SECOND (Ready)", timeout=60)
        # The old primary stopped in sync: the new one records from that lineage.
        assert_synced(sim, secondary, "incremental")
        assert_identical(sim, secondary, primary)


@pytest.mark.root
def test_second_fullsync_forces_a_full_synchronisation(make_sim, tmp_path):
    sim = start_pair(make_sim, tmp_path)
    # Running as SECOND: its receivers start again and are synchronised fully.
    assert "SECOND (Transient)" in hk(sim, "node2", "second", "fullsync", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=60)
    assert_synced(sim, "node1", "full")
    assert "the secondary asked for a full synchronisation" in hk(sim, "node1", "logview", "-m", MODULE)
    # Stopped: it starts as secondary with the same request.
    hk(sim, "node2", "stop", "-m", MODULE)
    wait_state(sim, "node1", "ALONE (Ready)")
    hk(sim, "node2", "second", "fullsync", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=60)
    assert_synced(sim, "node1", "full")
    # Without it, the same return is incremental.
    hk(sim, "node2", "stop", "-m", MODULE)
    wait_state(sim, "node1", "ALONE (Ready)")
    hk(sim, "node2", "second", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=60)
    assert_synced(sim, "node1", "incremental")
    assert_identical(sim, "node1", "node2")
    assert state(sim, "node1") == "PRIM (Ready)"
    stopped = sim.exec("node2", ["sh", "-c", f"hakit stop -m {MODULE} && hakit rfsprogress -m {MODULE}"],
                       check=False, capture=True)
    assert stopped.returncode == 1 and "no synchronisation runs" in stopped.stdout


def rfs_argv(sim, node: str) -> list[str]:
    for pid in (sim.cgroup / node / "cgroup.procs").read_text().split():
        try:
            argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if argv[0].endswith("hakit-rfs"):
            return argv
    raise AssertionError(f"no hakit-rfs on {node}")


# Run inside a node: whether MARKER crossed its interfaces in the clear in a TCP segment,
# over the next SECONDS.
SNIFF = """
import socket, sys, time
marker, end = sys.argv[1].encode(), time.monotonic() + float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.settimeout(0.2)
segments = seen = 0
while time.monotonic() < end:
    try:
        ip = s.recv(65536)
    except TimeoutError:
        continue
    if ip[9] == 6:
        segments += 1
        seen += marker in ip
print(segments, seen)
"""


@pytest.mark.root
def test_every_mirror_replicates_encrypted_and_authenticated(make_sim, tmp_path):
    """No `module genkey`, no option: the stream runs in TLS with the module key proved."""
    sim = make_sim(nodes=2, daemon=True, paths=(REP,))
    install(sim, tmp_path, ["node1", "node2"], mirror_conf(sim.spare_addr(0, 1), CONF))
    sim.exec("node1", ["sh", "-c", f"echo before > {REP}/old"])
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=60)
    for node in ("node1", "node2"):
        argv = rfs_argv(sim, node)
        assert "--tls-ca" in argv and "--auth-key-file" in argv and "--insecure" not in argv, argv
    marker = "hakit-plaintext-" + os.urandom(8).hex()
    sniffer = sim.popen("node2", ["python3", "-c", SNIFF, marker, "4"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    sim.exec("node1", ["sh", "-c", f"for i in $(seq 200); do echo {marker}; done > {REP}/new"])
    assert (sim.host_path("node2", REP) / "old").read_text() == "before\n"
    wait_for("the new file", lambda: marker in (sim.host_path("node2", REP) / "new").read_text()
             if (sim.host_path("node2", REP) / "new").exists() else False)
    segments, seen = map(int, sniffer.communicate(timeout=30)[0].split())
    assert segments > 0 and seen == 0, (segments, seen)
