"""The simulated-cluster harness against the real kernel: namespaces, bridges, nftables, cgroups."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from hakit.errors import HakitError
from hakit.testing import sim_host
from hakit.testing.sim import Sim, State
from tests.helpers import wait_for
from tests.sim_support import leftovers

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping (iputils-ping)"),
]

MakeSim = Callable[..., Sim]

# A node that answers does so in milliseconds; 0.5 s of silence is a cut.
PING = ["ping", "-n", "-q", "-c", "1", "-W", "0.5"]


def reaches(sim: Sim, node: str, addr: str) -> bool:
    return sim.exec(node, [*PING, addr], check=False).returncode == 0


def comes_back(sim: Sim, node: str, addr: str, timeout: float = 5.0) -> bool:
    # After a heal or a revive, a neighbour entry that the silence left incomplete is
    # retried at ARP's own pace (once a second), as on a real LAN: allow a few rounds.
    deadline = time.monotonic() + timeout
    while not reaches(sim, node, addr):
        if time.monotonic() > deadline:
            return False
    return True


def host_reaches(addr: str) -> bool:
    return subprocess.run([*PING, addr], capture_output=True, check=False).returncode == 0


def started(proc: subprocess.Popen[bytes], comm: str) -> int:
    """Pid of a process started with Sim.popen, once the launcher has become `comm`."""

    def ready() -> bool:
        try:
            return Path(f"/proc/{proc.pid}/comm").read_text().strip() == comm
        except FileNotFoundError:
            return False

    wait_for(f"{comm} started", ready, timeout=5)
    return proc.pid


def test_every_node_reaches_every_other_on_every_lan(make_sim: MakeSim) -> None:
    sim = make_sim(nodes=3, lans=2)
    for node in sim.nodes():
        targets = [sim.addr(o, lan) for o in sim.nodes() if o != node for lan in (0, 1)]
        script = f'for a in {" ".join(targets)}; do {" ".join(PING)} $a >/dev/null || echo "no $a"; done'
        out = sim.exec(node, ["sh", "-c", script]).stdout
        assert out == "", f"{node}: {out}"
        for lan in (0, 1):
            assert host_reaches(sim.addr(node, lan))


def test_a_node_looks_like_a_host_of_its_own(make_sim: MakeSim, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = make_sim(nodes=2, lans=2)
    monkeypatch.setenv("HAKIT_ROOT", "/elsewhere")
    script = (
        "cat /proc/sys/kernel/hostname; ls /sys/class/net | tr '\\n' ' '; echo; "
        "echo $HAKIT_NODE $HAKIT_SIM ${HAKIT_ROOT-unset}; pwd; tail -1 /proc/self/cgroup"
    )
    out = sim.exec("node2", ["sh", "-c", script]).stdout.splitlines()
    assert out == [
        "node2",
        "eth0 eth1 lo ",
        f"node2 {sim.name} unset",
        "/",
        f"0::/hakit-sim-{sim.name}/node2",
    ]
    cluster = ET.fromstring(sim.exec("node1", ["cat", "/etc/hakit/cluster.xml"]).stdout)
    lans = {
        lan.get("name"): {n.get("name"): n.get("addr") for n in lan.iter("node")}
        for lan in cluster.iter("lan")
    }
    assert lans == {
        name: {n: sim.addr(n, k) for n in ("node1", "node2")} for k, name in enumerate(("default", "private"))
    }


def test_each_node_has_its_own_files_at_the_same_paths(make_sim: MakeSim) -> None:
    extra = f"/srv/hakit-simtest-{os.getpid()}"
    created = not os.path.exists(extra)
    try:
        sim = make_sim(nodes=2, paths=[extra])
        for node in ("node1", "node2"):
            sim.exec(
                node, ["sh", "-c", f"echo {sim.name}-{node} > /var/lib/hakit/x; echo {node} > {extra}/y"]
            )
        for node in ("node1", "node2"):
            assert sim.exec(node, ["cat", "/var/lib/hakit/x"]).stdout == f"{sim.name}-{node}\n"
            assert sim.exec(node, ["cat", f"{extra}/y"]).stdout == f"{node}\n"
            assert (sim.paths(node).lib / "x").read_text() == f"{sim.name}-{node}\n"
            assert sim.host_path(node, f"{extra}/y").read_text() == f"{node}\n"
        host_x = Path("/var/lib/hakit/x")
        assert not host_x.exists() or sim.name not in host_x.read_text()
        assert not Path(extra, "y").exists()
    finally:
        if created and os.path.isdir(extra):
            os.rmdir(extra)


def test_kill_stops_every_process_and_silences_the_node_until_revived(make_sim: MakeSim) -> None:
    sim = make_sim(nodes=3)
    sleeper = sim.popen("node2", ["sleep", "1000"])
    pid = started(sleeper, "sleep")
    sim.exec("node2", ["sh", "-c", "echo kept > /var/lib/hakit/disk; echo gone > /run/hakit/pidfile"])

    sim.kill("node2")
    assert sleeper.wait(timeout=5) == -signal.SIGKILL
    assert not Path(f"/proc/{pid}").exists()
    assert not reaches(sim, "node1", sim.addr("node2"))
    assert not host_reaches(sim.addr("node2"))
    assert [n.state for n in sim.status().nodes] == ["up", "killed", "up"]

    sim.revive("node2")
    assert comes_back(sim, "node1", sim.addr("node2"))
    assert reaches(sim, "node2", sim.addr("node3"))
    assert host_reaches(sim.addr("node2"))
    # A reboot: the disk is kept, /run is not.
    assert sim.exec("node2", ["ls", "/var/lib/hakit", "/run/hakit"]).stdout.split() == [
        "/run/hakit:",
        "/var/lib/hakit:",
        "disk",
    ]
    assert [n.state for n in sim.status().nodes] == ["up", "up", "up"]


def test_cut_separates_two_nodes_and_heal_joins_them(make_sim: MakeSim) -> None:
    sim = make_sim(nodes=3, lans=2)
    sim.cut("node1", "node2")
    assert sim.status().cuts == (("node1", "node2"),)
    for lan in (0, 1):
        assert not reaches(sim, "node1", sim.addr("node2", lan))
        assert not reaches(sim, "node2", sim.addr("node1", lan))
        assert reaches(sim, "node3", sim.addr("node1", lan))
        assert reaches(sim, "node3", sim.addr("node2", lan))
        assert host_reaches(sim.addr("node1", lan))

    sim.heal()
    assert sim.status().cuts == ()
    for lan in (0, 1):
        assert comes_back(sim, "node1", sim.addr("node2", lan))
        assert comes_back(sim, "node2", sim.addr("node1", lan))


def test_freeze_stops_a_node_until_thawed(make_sim: MakeSim) -> None:
    sim = make_sim(nodes=1)
    tick = sim.paths("node1").lib / "tick"
    ticker = sim.popen(
        "node1", ["sh", "-c", "while :; do date +%s%N > /var/lib/hakit/tick; sleep 0.02; done"]
    )
    wait_for("the first tick", tick.exists, timeout=5)

    sim.freeze("node1")
    before = tick.read_text()
    time.sleep(0.2)
    assert tick.read_text() == before
    with pytest.raises(HakitError, match="frozen"):
        sim.exec("node1", ["true"])

    sim.thaw("node1")
    wait_for("a tick after the thaw", lambda: tick.read_text() != before, timeout=5)
    sim.kill("node1")
    assert ticker.wait(timeout=5) == -signal.SIGKILL


def test_daemon_runs_in_its_node_and_restarts_on_revive(make_sim: MakeSim) -> None:
    fake = (
        "import os, time; print('started', os.environ['HAKIT_NODE'], os.getcwd(), flush=True); "
        "time.sleep(1000)"
    )
    sim = make_sim(nodes=2, daemon=True, daemon_argv=[sys.executable, "-c", fake])
    node1 = sim.status().nodes[0]
    assert node1.daemon == "running"
    assert node1.daemon_pid is not None
    assert f"0::/hakit-sim-{sim.name}/node1\n" in Path(f"/proc/{node1.daemon_pid}/cgroup").read_text()
    log = Path(node1.daemon_log)
    wait_for("the daemon started", lambda: log.exists() and "started" in log.read_text(), timeout=5)
    assert log.read_text() == "started node1 /\n"

    sim.kill("node1")
    wait_for("the daemon gone", lambda: not Path(f"/proc/{node1.daemon_pid}").exists(), timeout=5)
    assert sim.status().nodes[0].daemon == "stopped"

    sim.revive("node1")
    again = sim.status().nodes[0]
    assert again.daemon == "running"
    assert again.daemon_pid != node1.daemon_pid
    wait_for("the daemon started again", lambda: log.read_text().count("started node1") == 2, timeout=5)


def test_a_daemon_that_cannot_start_is_reported_by_up(make_sim: MakeSim) -> None:
    broken = [sys.executable, "-c", "raise SystemExit('no configuration here')"]
    with pytest.raises(HakitError, match=r"node1: daemon exited at once.*no configuration here"):
        make_sim(nodes=1, daemon=True, daemon_argv=broken)


def test_down_leaves_nothing_behind(make_sim: MakeSim) -> None:
    sim = make_sim(nodes=2, lans=2)
    sleeper = sim.popen("node1", ["sleep", "1000"])
    started(sleeper, "sleep")
    sim.cut("node1", "node2")
    sim.freeze("node2")

    sim.down()
    assert leftovers(sim.name) == []
    assert sleeper.wait(timeout=5) == -signal.SIGKILL
    sim.down()
    with pytest.raises(HakitError, match="no simulated cluster"):
        sim.status()


def test_two_clusters_run_side_by_side(make_sim: MakeSim) -> None:
    a, b = make_sim(nodes=2), make_sim(nodes=2)
    assert a.subnet() != b.subnet()
    for sim in (a, b):
        sim.exec("node1", ["sh", "-c", f"echo {sim.name} > /var/lib/hakit/x"])
        assert reaches(sim, "node1", sim.addr("node2"))
    assert not reaches(a, "node1", b.addr("node2"))

    a.down()
    assert leftovers(a.name) == []
    assert reaches(b, "node1", b.addr("node2"))
    assert b.exec("node1", ["cat", "/var/lib/hakit/x"]).stdout == f"{b.name}\n"


def test_a_failed_up_removes_what_it_built(sim_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    build_node = Sim._build_node

    def fail_on_node2(self: Sim, st: State, i: int) -> None:
        if i == 2:
            sim_host.run("half-build", ["ip", "netns", "add", self.netns("node2")])
            raise HakitError("injected failure")
        build_node(self, st, i)

    monkeypatch.setattr(Sim, "_build_node", fail_on_node2)
    with pytest.raises(HakitError, match="injected failure"):
        Sim(sim_name).up(3, lans=2, daemon=False, owner_pid=os.getpid())
    assert leftovers(sim_name) == []


def test_the_sweeper_removes_a_cluster_whose_maker_died_half_way(sim_name: str) -> None:
    # The maker is SIGKILLed while building node2: no rollback ran, only the sweeper can help.
    maker = textwrap.dedent(f"""
        import os, signal
        from hakit.testing.sim import Sim
        build_node = Sim._build_node
        def die_on_node2(self, st, i):
            if i == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            build_node(self, st, i)
        Sim._build_node = die_on_node2
        Sim({sim_name!r}).up(3, lans=2, daemon=False, owner_pid=os.getpid())
    """)
    proc = subprocess.run([sys.executable, "-c", maker], capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert f"netns hksim-{sim_name}-node1" in leftovers(sim_name)

    # (A concurrent session's sweeper may have been first: any sweeper will do.)
    Sim.sweep_stale()
    assert leftovers(sim_name) == []


def test_a_cluster_lives_as_long_as_its_owner(sim_name: str) -> None:
    owner = subprocess.Popen(["sleep", "60"])
    try:
        Sim(sim_name).up(1, daemon=False, owner_pid=owner.pid)
        Sim.sweep_stale()
        Sim.down_all(owner_pid=os.getpid())
        assert sim_name in Sim.names()
    finally:
        owner.kill()
        owner.wait()
    Sim.sweep_stale()
    assert leftovers(sim_name) == []


def test_down_finishes_a_half_removed_cluster(make_sim: MakeSim) -> None:
    sim = make_sim(nodes=3, lans=2)
    sim_host.run("test", ["ip", "netns", "del", sim.netns("node1")])
    sim_host.run("test", ["ip", "link", "del", sim.bridge(1)])
    sim_host.run("test", ["ip", "link", "del", sim.veth(3, 0)])
    (sim.state_dir / "state.json").unlink()

    sim.down()
    assert leftovers(sim.name) == []
    sim.down()


def test_names_and_arguments_are_checked_before_anything_is_built(sim_name: str) -> None:
    for bad in ("Sim", "a-b", "toolong1", "1abc", ""):
        with pytest.raises(HakitError, match="bad simulated cluster name"):
            Sim(bad)
    sim = Sim(sim_name)
    for kwargs, message in [
        ({"nodes": 0}, "1 to 32 nodes"),
        ({"lans": 9}, "1 to 8 LANs"),
        ({"paths": ["relative"]}, "absolute"),
        ({"paths": ["/var"]}, "would hide"),
        ({"paths": ["/proc/x"]}, "kernel file system"),
        ({"paths": ["/etc/hakit"]}, "given twice"),
    ]:
        with pytest.raises(HakitError, match=message):
            sim.up(daemon=False, **kwargs)
    assert leftovers(sim_name) == []


CLI = textwrap.dedent("""
    import argparse, sys
    from hakit.cli import cmd_sim
    from hakit.errors import HakitError
    parser = argparse.ArgumentParser(prog="hakit")
    cmd_sim.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(sys.argv[1:])
    try:
        sys.exit(args.func(args))
    except HakitError as exc:
        print(f"hakit: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
""")


def test_command_line(sim_name: str) -> None:
    def hakit(*args: str) -> subprocess.CompletedProcess[str]:
        # cmd_sim under a minimal `hakit` (the real main also loads the compiled extension).
        return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, check=False)

    try:
        up = hakit("sim", "up", "--name", sim_name, "--nodes", "2", "--lans", "2", "--no-daemon")
        assert up.returncode == 0, up.stderr
        sim = Sim.load(sim_name)
        assert sim.addr("node2", 1) in up.stdout
        assert f"/var/lib/hakit-sim/{sim_name}/NODE/" in hakit("sim", "status", "--name", sim_name).stdout
        status = json.loads(hakit("sim", "status", "--name", sim_name, "--json").stdout)
        assert [n["addrs"] for n in status["nodes"]] == [
            [sim.addr(n, 0), sim.addr(n, 1)] for n in sim.nodes()
        ]

        ran = hakit("sim", "exec", "node2", "--name", sim_name, "--", "sh", "-c", "hostname >&2; exit 7")
        assert (ran.returncode, ran.stderr) == (7, "node2\n")
        assert hakit("sim", "exec", "--name", sim_name, "node1", "--", "nosuchcommand").returncode == 127
        for args, message in [
            (["exec", "node9", "--name", sim_name, "--", "true"], "no node 'node9'"),
            (["exec", "node1", "--name", sim_name], "usage"),
            (["kill", "node1", "--name", "nosuch"], "no simulated cluster named 'nosuch'"),
            (["cut", "node1", "node1", "--name", sim_name], "from itself"),
        ]:
            bad = hakit("sim", *args)
            assert bad.returncode != 0
            assert bad.stderr.startswith("hakit: ") and message in bad.stderr, bad.stderr
            assert "Traceback" not in bad.stderr

        assert hakit("sim", "down", "--name", sim_name).returncode == 0
        assert leftovers(sim_name) == []
    finally:
        Sim(sim_name).down()
