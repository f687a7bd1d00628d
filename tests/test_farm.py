"""Farm load balancing on a simulated cluster: node1-3 run the farm module and the test
application (tests/farm_app.py), node4 is the client (tests/farm_client.py).  Real TCP
and UDP through the shared VIP, the real eBPF filter in each node's kernel."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from hakit.testing.sim import lan_name
from tests.cluster import MODULE, history, hk, install, state, wait_state
from tests.helpers import wait_for

pytestmark = pytest.mark.root

HERE = Path(__file__).parent
FARM = ["node1", "node2", "node3"]
CLIENT = "node4"
TCP_PORT, STICKY_PORT, UDP_PORT, FRAG_PORT = 80, 81, 53, 54

START = f"""#!/bin/sh
echo "start_both $*" >> /var/lib/hakit/trace
setsid {sys.executable} {HERE / "farm_app.py"} $VIP {TCP_PORT},{STICKY_PORT} {UDP_PORT},{FRAG_PORT} \\
    </dev/null >/var/lib/hakit/app.out 2>&1 &
echo $! > /var/lib/hakit/app.pid
{{open}}
"""
STOP = """#!/bin/sh
echo "stop_both $*" >> /var/lib/hakit/trace
{close}
kill $(cat /var/lib/hakit/app.pid) 2>/dev/null
exit 0
"""
UPDATE = """#!/bin/sh
echo "update $*" >> /var/lib/hakit/trace
if [ "$1" = UP ] && [ "$2" = UP ]; then hakit vip open; fi
"""


def conf(vip: str, kind: str = "vmac_directed", powers: dict[str, int] | None = None,
         vip_attrs: str = "", hook: str = "tc", lans: int = 1) -> str:
    heartbeats = "".join(f'<lan name="{lan_name(k)}"/>' for k in range(lans))
    hosts = "".join(f'<host name="{n}" power="{p}"/>' for n, p in (powers or {}).items())
    cluster = f"<cluster>{hosts}</cluster>" if hosts else ""
    return f"""<!DOCTYPE safe>
<safe>
  <service mode="farm">
    <farm>{heartbeats}</farm>
    <vip {vip_attrs}>
      <interface_list><interface>
        <virtual_interface type="{kind}" hook="{hook}">
          <virtual_addr addr="{vip}" where="alias" connections="on"/>
        </virtual_interface>
      </interface></interface_list>
      <loadbalancing_list>
        <group name="web">{cluster}
          <rule port="{TCP_PORT}" proto="tcp" filter="on_port"/>
          <rule port="{UDP_PORT}" proto="udp" filter="on_ipid"/>
          <rule port="{FRAG_PORT}" proto="udp" filter="on_port"/>
        </group>
        <group name="sticky"><rule port="{STICKY_PORT}" proto="tcp" filter="on_addr"/></group>
      </loadbalancing_list>
    </vip>
    <user><var name="VIP" value="{vip}"/></user>
  </service>
</safe>
"""


@dataclass
class Farm:
    sim: object
    vip: str
    tmp: Path

    def client(self, *args: str, timeout: float = 120) -> dict:
        run = self.sim.exec(CLIENT, [sys.executable, str(HERE / "farm_client.py"), args[0], self.vip,
                                     *args[1:]], capture=True, timeout=timeout)
        return json.loads(run.stdout.splitlines()[-1])

    @contextlib.contextmanager
    def holding(self, count: int, seconds: float) -> Iterator[dict]:
        """`count` connections held open and asked every 100 ms for `seconds`; the dict
        yielded gets the client's report when the block ends."""
        report: dict = {}
        holder = self.sim.popen(CLIENT, [sys.executable, str(HERE / "farm_client.py"), "hold", self.vip,
                                         str(TCP_PORT), str(count), str(seconds)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert json.loads(holder.stdout.readline())["ready"]
            yield report
            out, _ = holder.communicate(timeout=60)
            report.update(json.loads(out.splitlines()[-1]))
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()

    def start(self, *nodes: str) -> None:
        for node in nodes:
            hk(self.sim, node, "start", "-m", MODULE)
        for node in nodes:
            wait_state(self.sim, node, "UP (Ready)")

    def resource(self, node: str, name: str) -> float:
        out = hk(self.sim, node, "state", "-m", MODULE, "-v")
        for line in out.splitlines():
            fields = line.split()
            if fields and fields[0] == name:
                try:
                    return float(fields[1])
                except ValueError:
                    return 0.0
        return 0.0

    def share(self, node: str, group: str = "web") -> float:
        return self.resource(node, f"vip.share.{group}")

    def settled(self, nodes: list[str], group: str = "web") -> bool:
        """Every bucket has exactly one owner among `nodes`."""
        return abs(sum(self.share(n, group) for n in nodes) - 100.0) < 0.2 and all(
            self.share(n, group) > 0 for n in nodes)


def make_farm(make_sim, tmp_path: Path, kind: str = "vmac_directed", powers: dict[str, int] | None = None,
              vip_attrs: str = "", open_cmd: str = "", close_cmd: str = "",
              start: tuple[str, ...] = tuple(FARM), hook: str = "tc", lans: int = 1) -> Farm:
    sim = make_sim(nodes=4, lans=lans, daemon=True)
    vip = sim.spare_addr(0, 1)
    scripts = {"start_both": START.format(open=open_cmd), "stop_both": STOP.format(close=close_cmd),
               "update": UPDATE}
    install(sim, tmp_path, FARM, conf(vip, kind, powers, vip_attrs, hook, lans), scripts)
    hk(sim, "node1", "-H", ",".join(FARM), "-E", MODULE)
    farm = Farm(sim, vip, tmp_path)
    if start:
        farm.start(*start)
        wait_for("buckets settled", lambda: farm.settled(list(start)), timeout=20)
    return farm


def counts(names: list[str]) -> dict[str, int]:
    return {n: names.count(n) for n in set(names)}


@pytest.mark.parametrize("hook", ["tc", "xdp"])
def test_connections_spread_by_power_and_on_addr_sticks(make_sim, tmp_path, hook):
    farm = make_farm(make_sim, tmp_path, powers={"node1": 2, "node2": 1, "node3": 1}, hook=hook)
    got = farm.client("connect", str(TCP_PORT), "3000")
    assert got["failed"] == 0
    spread = counts(got["nodes"]["-"])
    # Power 2/1/1: a half and two quarters, each within 5 points over 3,000 connections.
    for node, expected in (("node1", 0.5), ("node2", 0.25), ("node3", 0.25)):
        assert abs(spread.get(node, 0) / 3000 - expected) <= 0.05, spread
    assert farm.share("node1") == pytest.approx(50.0, abs=0.1)
    # on_addr: each client address stays on one node, and the addresses spread.
    sources = [farm.sim.spare_addr(0, i) for i in range(2, 32)]
    farm.sim.exec(CLIENT, ["sh", "-c", "; ".join(f"ip addr add {a}/24 dev eth0" for a in sources)])
    got = farm.client("connect", str(STICKY_PORT), "5", ",".join(sources))
    assert got["failed"] == 0
    assert all(len(set(nodes)) == 1 for nodes in got["nodes"].values()), got
    assert len({nodes[0] for nodes in got["nodes"].values()}) == 3
    # 4000-byte datagrams go out in three fragments, all to the elected node; only the
    # first has the ports on_port hashes: the rest must follow it to its owner.
    got = farm.client("udp", str(FRAG_PORT), "60", "4000", "60")
    assert got["lost"] <= 1 and got["sizes"] == [4000] and len(got["nodes"]) == 3, got


def test_on_ipid_spreads_one_udp_client(make_sim, tmp_path):
    farm = make_farm(make_sim, tmp_path, kind="vmac_invisible")
    got = farm.client("udp", str(UDP_PORT), "600", "100")
    assert got["lost"] <= 6, got
    assert set(got["nodes"]) == set(FARM) and min(got["nodes"].values()) >= 120, got


@pytest.mark.parametrize("kind", ["vmac_directed", "vmac_invisible"])
def test_a_joining_node_takes_its_share_without_breaking_connections(make_sim, tmp_path, kind):
    farm = make_farm(make_sim, tmp_path, kind=kind, start=("node1", "node2"))
    with farm.holding(60, 20) as held:
        farm.start("node3")
        wait_for("node3 takes its share", lambda: farm.settled(FARM), timeout=10)
        assert farm.share("node3") == pytest.approx(100 / 3, abs=0.1)
        spread = counts(farm.client("connect", str(TCP_PORT), "300")["nodes"]["-"])
        assert set(spread) == set(FARM), spread
        # Resources, every 10 s: the held connections are counted where they are.
        wait_for("connections counted", lambda: sum(
            farm.resource(n, f"connections.{farm.vip}") for n in ("node1", "node2")) == 60, timeout=12)
        assert farm.resource("node1", "vip.packets.accepted") > 0
    assert held["broken"] == 0, held["errors"]
    assert held["first"] == held["last"]  # each connection stayed on the node it started on
    assert set(held["first"]) == {"node1", "node2"}


def test_a_killed_nodes_share_is_served_by_the_others(make_sim, tmp_path):
    farm = make_farm(make_sim, tmp_path)
    farm.sim.kill("node3")
    got = farm.client("until", str(TCP_PORT), "10")
    assert got["elapsed"] is not None and got["elapsed"] < 3.0, got
    spread = counts(farm.client("connect", str(TCP_PORT), "200")["nodes"]["-"])
    assert set(spread) == {"node1", "node2"}, spread
    # node1 was the elected node (started first): kill it too, node2 answers ARP and takes all.
    farm.sim.kill("node1")
    got = farm.client("until", str(TCP_PORT), "10")
    assert got["elapsed"] is not None and got["elapsed"] < 3.0, got
    assert farm.share("node2") == 100.0


@pytest.mark.parametrize("kind", ["vmac_directed", "vmac_invisible"])
def test_a_client_reusing_its_port_after_the_server_closed_first_is_served(make_sim, tmp_path, kind):
    """A server that closes first waits in time-wait for the client's FIN. On the buckets
    a dead node left, where nobody else can hold a flow, the filter gave that time-wait
    neither the FIN nor the reset of a client reusing its port: the client could not
    reconnect from that port for a minute."""
    farm = make_farm(make_sim, tmp_path, kind=kind)
    owners = farm.client("owners", str(TCP_PORT), "41000", "60")["nodes"]
    sport = next(p for p, node in owners.items() if node == "node3")
    farm.sim.kill("node3")
    wait_for("node3's share served", lambda: farm.settled(["node1", "node2"]))
    got = farm.client("reuse", str(TCP_PORT), "5", sport)
    assert got["failed"] == 0 and len(got["nodes"]) == 5 and len(set(got["nodes"])) == 1, got


def values(sim, node: str, resource: str) -> list[str]:
    """The values the resource took, oldest first: a mark is the length of this list."""
    return [v for _, v in history(sim, node, resource)]


def test_joins_close_together_are_one_change(make_sim, tmp_path):
    farm = make_farm(make_sim, tmp_path, start=("node1",))
    mark = len(values(farm.sim, "node1", "vip.share.web"))
    hk(farm.sim, "node1", "-H", "node2,node3", "start", "-m", MODULE)
    wait_for("three shares", lambda: farm.settled(FARM), timeout=15)
    # node1 went from all the buckets to a third in one step, never through a half: both
    # joiners were admitted together.
    assert values(farm.sim, "node1", "vip.share.web")[mark:] == ["33.3"]


def test_a_node_lost_and_back_briefly_reshuffles_once(make_sim, tmp_path):
    """node2 hangs twice in a row (its processes stopped past the heartbeat timeout): node1
    moves node2's buckets once when it is lost and once when it has stayed back, not at
    every return; node2, whose peers never went silent, loses none of them and never takes
    their buckets."""
    farm = make_farm(make_sim, tmp_path)
    marks = {n: len(values(farm.sim, n, "vip.share.web")) for n in FARM}
    peers = {p: len(values(farm.sim, "node2", f"peer.{p}")) for p in ("node1", "node3")}
    for pause in (0.3, 0.0):
        farm.sim.freeze("node2")
        time.sleep(1.0)
        farm.sim.thaw("node2")
        time.sleep(pause)
    wait_for("three shares again", lambda: farm.settled(FARM), timeout=15)
    changes = values(farm.sim, "node1", "vip.share.web")[marks["node1"]:]
    assert len(changes) == 2 and changes[-1] == "33.3", changes
    for peer, mark in peers.items():
        seen = values(farm.sim, "node2", f"peer.{peer}")[mark:]
        assert "lost" not in seen, (peer, seen)
    node2 = values(farm.sim, "node2", "vip.share.web")[marks["node2"]:]
    assert all(float(s) <= 33.4 for s in node2), node2
    spread = counts(farm.client("connect", str(TCP_PORT), "300")["nodes"]["-"])
    assert set(spread) == set(FARM), spread


def test_scriptcontrol_opens_and_closes_the_share(make_sim, tmp_path):
    # The scripts open the share only where /var/lib/hakit/open exists: not on node3.
    farm = make_farm(make_sim, tmp_path, vip_attrs='scriptcontrol="on"', close_cmd="hakit vip close",
                     open_cmd="if [ -e /var/lib/hakit/open ]; then hakit vip open; fi", start=())
    for node in ("node1", "node2"):
        farm.sim.host_path(node, "/var/lib/hakit/open").touch()
    farm.start(*FARM)
    wait_for("node1 and node2 share", lambda: farm.settled(["node1", "node2"]), timeout=10)
    assert farm.share("node3") == 0.0
    spread = counts(farm.client("connect", str(TCP_PORT), "300")["nodes"]["-"])
    assert set(spread) == {"node1", "node2"}, spread
    assert "share of the virtual IP open" in hk(farm.sim, "node3", "vip", "open", "-m", MODULE)
    wait_for("node3 shares", lambda: farm.settled(FARM), timeout=10)
    hk(farm.sim, "node2", "vip", "close", "-m", MODULE)
    wait_for("node2 closed", lambda: farm.settled(["node1", "node3"]) and farm.share("node2") == 0,
             timeout=10)
    spread = counts(farm.client("connect", str(TCP_PORT), "300")["nodes"]["-"])
    assert set(spread) == {"node1", "node3"}, spread


def test_vip_open_without_scriptcontrol_is_refused(make_sim, tmp_path):
    farm = make_farm(make_sim, tmp_path, start=("node1",))
    run = farm.sim.exec("node1", ["hakit", "vip", "close", "-m", MODULE], check=False, capture=True)
    assert run.returncode == 1 and 'scriptcontrol="on"' in run.stderr and "Traceback" not in run.stderr


def tc_filters(sim, node: str) -> str:
    return sim.exec(node, ["tc", "filter", "show", "dev", "eth0", "ingress"], capture=True).stdout


def module_pid(sim, node: str) -> int:
    """The module process: the child of the node's hakitd (whose pid file we read) running AM."""
    daemon = int(sim.host_path(node, "/run/hakit/hakitd.pid").read_text())
    children = Path(f"/proc/{daemon}/task/{daemon}/children").read_text().split()
    for pid in children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"hakit.module.process" in cmdline and MODULE.encode() in cmdline:
            return int(pid)
    raise AssertionError(f"no module process under hakitd on {node}")


def test_filter_stays_while_the_module_process_restarts_and_stop_detaches(make_sim, tmp_path):
    farm = make_farm(make_sim, tmp_path)
    assert "farm_lb_tc" in tc_filters(farm.sim, "node2")
    with farm.holding(30, 8) as held:
        pid = module_pid(farm.sim, "node2")
        os.kill(pid, signal.SIGKILL)
        # While hakitd cleans up and respawns, the filter keeps filtering.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert "farm_lb_tc" in tc_filters(farm.sim, "node2")
            time.sleep(0.1)
        wait_for("node2 back", lambda: module_pid(farm.sim, "node2") != pid, timeout=20)
        wait_state(farm.sim, "node2", "UP (Ready)", timeout=30)
        wait_for("node2 shares again", lambda: farm.settled(FARM), timeout=15)
    # node2's application was stopped by the cleanup (its own connections end with it);
    # nobody else's broke.
    others = [i for i, n in enumerate(held["first"]) if n != "node2"]
    assert others and all(held["last"][i] == held["first"][i] for i in others), held
    assert "filter adopted from the previous run" in hk(farm.sim, "node2", "logview", "-m", MODULE)

    hk(farm.sim, "node2", "stop", "-m", MODULE)
    assert "farm_lb" not in tc_filters(farm.sim, "node2")
    pins = farm.sim.exec("node2", ["ls", "/run/hakit/bpf"], capture=True, check=False).stdout
    assert MODULE not in pins.split()
    addrs = farm.sim.exec("node2", ["ip", "-4", "addr", "show", "dev", "eth0"], capture=True).stdout
    assert farm.vip not in addrs


def test_update_applies_new_powers_and_runs_the_update_script(make_sim, tmp_path):
    farm = make_farm(make_sim, tmp_path)
    # The operator edits the installed configuration on each node, then applies it live.
    for node in FARM:
        userconfig = farm.sim.host_path(node, f"/etc/hakit/modules/{MODULE}/conf/userconfig.xml")
        userconfig.write_text(conf(farm.vip, powers={"node1": 2, "node2": 1, "node3": 1}))
        hk(farm.sim, node, "update", "-m", MODULE)
    wait_for("new powers", lambda: farm.share("node1") == 50.0 and farm.settled(FARM), timeout=10)
    trace = farm.sim.host_path("node1", "/var/lib/hakit/trace").read_text()
    assert "update UP UP" in trace


# -- the filter is supervised (docs/farm.md)

REMOVALS = {  # what the module log gives as the reason: what an operator or a tool ran
    "tc filter deleted": ["tc", "filter", "del", "dev", "eth0", "ingress"],
    "clsact qdisc deleted": ["tc", "qdisc", "del", "dev", "eth0", "clsact"],
    "XDP program removed": ["ip", "link", "set", "dev", "eth0", "xdpgeneric", "off"],
}
REPAIRED = "load-balancing filter on eth0 was removed ({}); attached again"


def filter_on(sim, node: str, hook: str) -> bool:
    """The farm's program is attached to the node's eth0 (on veth, XDP is generic)."""
    if hook == "tc":
        return "farm_lb_tc" in tc_filters(sim, node)
    link = json.loads(sim.exec(node, ["ip", "-j", "-d", "link", "show", "eth0"], capture=True,
                               check=False).stdout or "[{}]")[0]
    return (link.get("xdp") or {}).get("prog", {}).get("name") == "farm_lb_xdp"


def vip_on(farm: Farm, node: str) -> bool:
    addrs = farm.sim.exec(node, ["ip", "-4", "addr", "show", "dev", "eth0"], capture=True, check=False).stdout
    return f" {farm.vip}/" in addrs


def logged_at(sim, node: str, message: str) -> float | None:
    """When the module log got `message` (its own clock: a loaded machine's slow commands
    do not count), None if it has not."""
    for line in hk(sim, node, "logview", "-m", MODULE).splitlines():
        if message in line:
            return datetime.strptime(line.split(" | ")[0], "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return None


def repaired_within(sim, node: str, message: str, since: float) -> float:
    wait_for(message, lambda: logged_at(sim, node, message) is not None, timeout=5)
    return (logged_at(sim, node, message) or 0.0) - since


def all_served(farm: Farm, nodes: list[str]) -> None:
    got = farm.client("connect", str(TCP_PORT), "300")
    assert got["failed"] == 0, got
    assert set(counts(got["nodes"]["-"])) == set(nodes), got


@pytest.mark.parametrize(("hook", "kind", "why"), [
    ("tc", "vmac_invisible", "tc filter deleted"),
    ("tc", "vmac_directed", "clsact qdisc deleted"),
    ("xdp", "vmac_invisible", "XDP program removed"),
])
def test_a_removed_filter_is_attached_again(make_sim, tmp_path, hook, kind, why):
    farm = make_farm(make_sim, tmp_path, kind=kind, hook=hook)
    sim = farm.sim
    assert filter_on(sim, "node2", hook)
    removed = time.time()
    sim.exec("node2", REMOVALS[why])
    assert repaired_within(sim, "node2", REPAIRED.format(why), removed) < 1.0
    assert filter_on(sim, "node2", hook)
    assert state(sim, "node2") == "UP (Ready)"
    time.sleep(max(0.0, removed + 1.5 - time.time()))
    assert farm.settled(FARM)
    all_served(farm, FARM)


def test_a_filter_that_cannot_be_restored_takes_the_node_out_until_it_is_back(make_sim, tmp_path):
    # Heartbeats on a second LAN as well: node2 stays heard while its eth0 is gone, so its
    # share moves on its own word (its payload says closed), not on its silence.
    farm = make_farm(make_sim, tmp_path, hook="xdp", lans=2)
    sim = farm.sim
    # Deleted and created again at once (a script, a driver reload): repaired in place,
    # as soon as the new eth0 has the address that places the VIP.
    sim.unplug("node2")
    sim.plug("node2")
    created = time.time()
    recreated = REPAIRED.format("interface deleted and created again")
    assert repaired_within(sim, "node2", recreated, created) < 1.0
    assert filter_on(sim, "node2", "xdp") and vip_on(farm, "node2")
    assert state(sim, "node2") == "UP (Ready)"
    time.sleep(max(0.0, created + 1.5 - time.time()))
    all_served(farm, FARM)

    # Gone for good: node2 leaves the membership, the others serve its share.
    sim.unplug("node2")
    wait_for("node2 out", lambda: farm.share("node2") == 0 and farm.settled(["node1", "node3"]), timeout=10)
    assert state(sim, "node2") == "UP (NotReady)"
    assert "missing on eth0: interface deleted" in hk(sim, "node2", "state", "-m", MODULE, "-v")
    assert logged_at(sim, "node2", "load-balancing filter missing on eth0 (interface deleted)")
    all_served(farm, ["node1", "node3"])

    # Back: the share reopens by itself.
    sim.plug("node2")
    wait_state(sim, "node2", "UP (Ready)", timeout=10)
    wait_for("node2 shares again", lambda: farm.settled(FARM), timeout=10)
    assert filter_on(sim, "node2", "xdp") and vip_on(farm, "node2")
    assert logged_at(sim, "node2", "filter on eth0 attached again: this node takes its share again")
    all_served(farm, FARM)

    # A tool that keeps removing the filter: a few repairs, then the node leaves rather than
    # fight, and tries again after a hold.  The tool goes on until node2 has left (on a
    # loaded machine repairs may come far apart), then stops so that the retry succeeds.
    fight = "while :; do ip link set dev eth0 xdpgeneric off; sleep 0.05; done"
    tool = sim.popen("node2", ["sh", "-c", fight])
    try:
        wait_for("node2 out", lambda: farm.share("node2") == 0 and farm.settled(["node1", "node3"]),
                 timeout=15)
    finally:
        tool.kill()
        tool.wait()
    assert logged_at(sim, "node2", "load-balancing filter missing on eth0 (XDP program removed 4 times "
                     "within 5 s; tried again in 5 s): this node leaves")
    wait_state(sim, "node2", "UP (Ready)", timeout=10)
    wait_for("node2 shares again", lambda: farm.settled(FARM), timeout=10)
