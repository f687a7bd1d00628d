"""The cluster engine on a simulated cluster: mirror, farm and light automata,
heartbeats, failover rules, checkers acting, maxloop, split brain."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hakit.heart.protocol import Beat, encode
from hakit.testing import zeroloss
from tests.cluster import MODULE, TRACING, hk, install, mirror_conf, state, trace, wait_state
from tests.helpers import node_pids, wait_for

pytestmark = pytest.mark.root


def has_vip(sim, node: str, vip: str) -> bool:
    out = sim.exec(node, ["ip", "-4", "-o", "addr", "show"], capture=True).stdout
    return f" {vip}/" in out


@pytest.fixture
def mirror(make_sim, tmp_path):
    sim = make_sim(nodes=2, daemon=True)
    vip = sim.spare_addr(0, 1)
    install(sim, tmp_path, ["node1", "node2"], mirror_conf(vip))
    return sim, vip


def test_mirror_first_start_needs_prim_then_fails_over_and_returns(mirror):
    sim, vip = mirror
    hk(sim, "node1", "start", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    # A fresh module: neither copy is known to be the reference.
    wait_state(sim, "node1", "WAIT (NotReady)")
    wait_state(sim, "node2", "WAIT (NotReady)")
    assert not has_vip(sim, "node1", vip) and not has_vip(sim, "node2", vip)

    hk(sim, "node1", "prim", "-m", MODULE)
    wait_state(sim, "node1", "PRIM (Ready)")
    wait_state(sim, "node2", "SECOND (Ready)")
    assert has_vip(sim, "node1", vip) and not has_vip(sim, "node2", vip)
    assert "start_prim " in trace(sim, "node1") and "start_second " in trace(sim, "node2")
    assert "PRIM (Ready)" in hk(sim, "node2", "state", "-m", MODULE, "-v")  # peer.node1

    sim.kill("node1")
    took = wait_state(sim, "node2", "ALONE (Ready)", timeout=10)
    assert took < 5
    assert has_vip(sim, "node2", vip)
    assert trace(sim, "node2")[-2:] == ["stop_second ", "start_prim "]
    log = hk(sim, "node2", "logview", "-m", MODULE)
    assert "Peer node1 lost" in log

    sim.revive("node1")
    # The crash left PRIM in node1's store; after the reboot nothing runs there.
    assert state(sim, "node1") == "STOP (NotReady)"
    hk(sim, "node1", "start", "-m", MODULE)
    wait_state(sim, "node1", "SECOND (Ready)")
    wait_state(sim, "node2", "PRIM (Ready)")
    assert not has_vip(sim, "node1", vip)

    # node1 was secondary last: alone, it may not claim its copy is the newest.
    hk(sim, "node1", "stop", "-m", MODULE)
    hk(sim, "node2", "stop", "-m", MODULE)
    assert state(sim, "node2") == "STOP (NotReady)" and not has_vip(sim, "node2", vip)
    refused = sim.exec("node1", ["hakit", "prim", "-m", MODULE], check=False, capture=True)
    assert refused.returncode == 1 and "primforce" in refused.stderr
    hk(sim, "node1", "primforce", "-m", MODULE)
    wait_state(sim, "node1", "ALONE (Ready)")
    hk(sim, "node1", "stop", "-m", MODULE)


def test_stop_and_swap_hand_over_without_heartbeat_timeout(mirror):
    sim, vip = mirror
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)")
    wait_state(sim, "node1", "PRIM (Ready)")

    hk(sim, "node1", "swap", "-m", MODULE)
    wait_state(sim, "node2", "PRIM (Ready)")
    wait_state(sim, "node1", "SECOND (Ready)")
    assert has_vip(sim, "node2", vip) and not has_vip(sim, "node1", vip)

    # A stopped primary hands over at once: its last heartbeats say STOP.
    start = time.monotonic()
    hk(sim, "node2", "stop", "-m", MODULE)
    wait_state(sim, "node1", "ALONE (Ready)")
    assert time.monotonic() - start < 5
    assert has_vip(sim, "node1", vip)


def test_partition_without_witness_leaves_both_alone_then_one_gives_way(mirror):
    sim, vip = mirror
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)")
    sim.cut("node1", "node2")
    wait_state(sim, "node2", "ALONE (Ready)")
    assert state(sim, "node1") == "ALONE (Ready)"  # the documented split brain
    sim.heal()
    # The node primary for the shorter time gives way and comes back as secondary.
    wait_state(sim, "node2", "SECOND (Ready)")
    wait_state(sim, "node1", "PRIM (Ready)")
    assert has_vip(sim, "node1", vip) and not has_vip(sim, "node2", vip)


def test_partition_with_witness_leaves_exactly_one_primary(make_sim, tmp_path):
    sim = make_sim(nodes=3, daemon=True)
    vip = sim.spare_addr(0, 1)
    witness = f'<check><splitbrain ident="witness" exec="ping" arg="{sim.addr("node3")}"/></check>'
    install(sim, tmp_path, ["node1", "node2"], mirror_conf(vip, witness))
    for node in ("node1", "node2"):
        sim.host_path(node, f"/etc/hakit/modules/{MODULE}/conf/nodes").write_text("node1\nnode2\n")
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)")
    # node2 loses node1 and the witness: it must not take over.
    sim.cut("node1", "node2")
    sim.cut("node2", "node3")
    wait_state(sim, "node2", "WAIT (NotReady)")
    wait_state(sim, "node1", "ALONE (Ready)")
    assert has_vip(sim, "node1", vip) and not has_vip(sim, "node2", vip)
    assert "splitbrain.witness" in hk(sim, "node2", "state", "-m", MODULE, "-v")
    sim.heal()
    wait_state(sim, "node2", "SECOND (Ready)")
    assert state(sim, "node1") == "PRIM (Ready)"


def test_forged_heartbeats_are_rejected(mirror):
    sim, _ = mirror
    hk(sim, "node1", "prim", "-m", MODULE)
    wait_state(sim, "node1", "ALONE (Ready)")
    port = 9300 + 7
    forged = encode(b"not the module key" * 2, Beat(MODULE, "node2", time.time_ns(), 1, b"", b"",
                                                     {"state": "PRIM", "status": "Ready"}))
    sender = (
        "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
        f"s.bind(('{sim.addr('node2')}', 0));"
        f"[s.sendto(bytes.fromhex(sys.argv[1]),('{sim.addr('node1')}',{port})) for _ in range(20)]"
    )
    sim.exec("node2", ["python3", "-c", sender, forged.hex()])
    wait_for("rejection logged",
             lambda: "rejected: bad authentication tag" in hk(sim, "node1", "logview", "-m", MODULE))
    # Nothing changed: the forged PRIM did not make node1 give way, no peer appeared.
    time.sleep(0.5)
    assert state(sim, "node1") == "ALONE (Ready)"
    assert "Peer node2 heard" not in hk(sim, "node1", "logview", "-m", MODULE)


# Run inside a node: the UDP payloads `count` datagrams from SRC to PORT carried, in hex.
RECORD = """
import socket, sys
src, port, count = socket.inet_aton(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.settimeout(10)
got = []
while len(got) < count:
    ip = s.recv(65536)
    at = (ip[0] & 15) * 4
    if ip[9] == 17 and ip[12:16] == src and int.from_bytes(ip[at + 2:at + 4], "big") == port:
        got.append(ip[at + 8:].hex())
print(" ".join(got))
"""
# Run inside a node: send those payloads to ADDR:PORT from BIND over and over, as a forger would.
REPLAY = """
import socket, sys, time
bind, addr, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((bind, 0))
end = time.monotonic() + seconds
while time.monotonic() < end:
    for data in sys.argv[5:]:
        s.sendto(bytes.fromhex(data), (addr, port))
        time.sleep(0.05)
"""


def test_heartbeats_recorded_and_replayed_after_the_receiver_restarts_are_refused(mirror):
    """node1's PRIM beats, replayed once node1 has stopped, must not make a restarted node2
    believe that a primary runs (it would wait as secondary of nobody)."""
    sim, _ = mirror
    hk(sim, "node1", "start", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    hk(sim, "node1", "prim", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)")
    port = 9300 + 7
    recorded = sim.exec("node2", ["python3", "-c", RECORD, sim.addr("node1"), str(port), "5"]).stdout.split()
    hk(sim, "node1", "stop", "-m", MODULE)
    wait_state(sim, "node2", "ALONE (Ready)")
    hk(sim, "node2", "stop", "-m", MODULE)
    heard = hk(sim, "node2", "logview", "-m", MODULE).count("Peer node1 heard")
    replayer = sim.popen("node1", ["python3", "-c", REPLAY, sim.addr("node1"), sim.addr("node2"), str(port),
                                   "8", *recorded])
    try:
        hk(sim, "node2", "start", "-m", MODULE)
        wait_for("replay logged", lambda: "rejected: replayed" in hk(sim, "node2", "logview", "-m", MODULE))
        wait_state(sim, "node2", "ALONE (Ready)")
        assert hk(sim, "node2", "logview", "-m", MODULE).count("Peer node1 heard") == heard
        peer = hk(sim, "node2", "state", "-m", MODULE, "-v").split("peer.node1")[1].split("\n")[0]
        assert "PRIM" not in peer, peer
    finally:
        replayer.kill()
        replayer.wait()


def test_nodes_whose_clocks_are_minutes_apart_form_the_cluster(mirror):
    """HA nodes often lose NTP when things go wrong: a node that reboots with its clock
    ten minutes behind, or ahead, is heard again by its peer, which never restarted."""
    sim, _ = mirror
    hk(sim, "node1", "start", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    hk(sim, "node1", "prim", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)")
    for node, other, offset in (("node2", "node1", -600), ("node1", "node2", 600)):
        sim.kill(node)
        wait_state(sim, other, "ALONE (Ready)")
        sim.set_clock(node, offset)
        sim.revive(node)
        skew = int(sim.exec(node, ["date", "+%s"]).stdout) - time.time()
        assert abs(skew - offset) < 30, skew
        hk(sim, node, "start", "-m", MODULE)
        wait_state(sim, node, "SECOND (Ready)", timeout=30)
        wait_state(sim, other, "PRIM (Ready)")


def test_farm_keeps_survivors_up_when_a_node_dies(make_sim, tmp_path):
    sim = make_sim(nodes=3, daemon=True)
    conf = """<!DOCTYPE safe>
<safe><service mode="farm"><farm><lan name="default"/></farm><user/></service></safe>
"""
    install(sim, tmp_path, sim.nodes(), conf)
    for node in sim.nodes():
        hk(sim, node, "start", "-m", MODULE)
    for node in sim.nodes():
        wait_state(sim, node, "UP (Ready)")
        assert "start_both " in trace(sim, node)
    wait_for("peers heard", lambda: hk(sim, "node1", "state", "-m", MODULE, "-v").count("UP (Ready)") == 3)
    sim.kill("node3")
    wait_for("node3 lost", lambda: "peer.node3" in (v := hk(sim, "node1", "state", "-m", MODULE, "-v"))
             and "lost" in v.split("peer.node3")[1].split("\n")[0])
    for node in ("node1", "node2"):
        assert state(sim, node) == "UP (Ready)"


LIGHT_START = """#!/bin/sh
echo "start_prim $*" >> /var/lib/hakit/trace
setsid python3 -c "import socket,time; s=socket.socket(); \\
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('127.0.0.1',8081)); \\
s.listen(); time.sleep(1e6)" \\
    </dev/null >/dev/null 2>&1 &
echo $! > /var/lib/hakit/web.pid
cp /bin/sleep /var/lib/hakit/hkapp
setsid /var/lib/hakit/hkapp 100000 </dev/null >/dev/null 2>&1 &
echo $! > /var/lib/hakit/hkapp.pid
"""
LIGHT_STOP = """#!/bin/sh
echo "stop_prim $*" >> /var/lib/hakit/trace
kill $(cat /var/lib/hakit/web.pid) $(cat /var/lib/hakit/hkapp.pid) 2>/dev/null
exit 0
"""


def fired(sim, node: str, label: str, action: str, module: str = MODULE) -> Callable[[], bool]:
    return lambda: f"Rule {label} true: action {action}" in hk(sim, node, "logview", "-m", module)


def starts(sim, node: str) -> int:
    return trace(sim, node).count("start_prim ")


def test_every_checker_type_triggers_its_action(make_sim, tmp_path):
    sim = make_sim(nodes=2, lans=2, daemon=True)
    vip = sim.spare_addr(0, 1)
    conf = f"""<!DOCTYPE safe>
<safe>
  <service mode="light" maxloop="50">
    <vip><interface_list><interface>
      <real_interface><virtual_addr addr="{vip}" where="one_side_alias" check="on"/></real_interface>
    </interface></interface_list></vip>
    <errd><proc name="hkapp" atleast="1" action="restart" class="prim"/></errd>
    <check>
      <tcp ident="web" when="prim"><to addr="127.0.0.1" port="8081" interval="1" timeout="1"/></tcp>
      <ping ident="gw"><to addr="{sim.addr("node2")}" interval="1" timeout="1"/></ping>
      <intf ident="lan1"><to name="eth1"/></intf>
      <custom ident="c" exec="forever" action="restart"/>
      <module name="other"/>
    </check>
    <user/>
  </service>
</safe>
"""
    other = '<!DOCTYPE safe>\n<safe><service mode="light"><user/></service></safe>\n'
    install(sim, tmp_path, ["node1"], other, {}, module="other", module_id=8)
    install(sim, tmp_path, ["node1"], conf, {
        "start_prim": LIGHT_START, "stop_prim": LIGHT_STOP,
        "forever": "#!/bin/sh\nexec sleep 100000\n",
    })
    hk(sim, "node1", "start", "-m", "other")
    hk(sim, "node1", "start", "-m", MODULE)
    wait_state(sim, "node1", "ALONE (Ready)")
    hk(sim, "node1", "set", "-m", MODULE, "-r", "custom.c", "-v", "up")

    def up(resource: str) -> Callable[[], bool]:
        return lambda: f"{resource} " in (out := hk(sim, "node1", "state", "-m", MODULE, "-v")) and \
            out.split(f"{resource} ")[1].split()[0] == "up"

    for res in ("tcp.web", "ping.gw", "intf.lan1", f"ip.{vip}", "module.other", "errd.hkapp"):
        wait_for(f"{res} up", up(res))

    # tcp: the listener dies -> restart, which starts it again.
    n = starts(sim, "node1")
    sim.exec("node1", ["sh", "-c", "kill $(cat /var/lib/hakit/web.pid)"])
    wait_for("t_web restart", fired(sim, "node1", "t_web", "restart"))
    wait_for("restarted", lambda: starts(sim, "node1") > n)
    wait_state(sim, "node1", "ALONE (Ready)")
    wait_for("tcp.web up again", up("tcp.web"))

    # errd: the monitored process dies -> restart.
    n = starts(sim, "node1")
    wait_for("errd.hkapp up", up("errd.hkapp"))
    sim.exec("node1", ["sh", "-c", "kill $(cat /var/lib/hakit/hkapp.pid)"])
    wait_for("errd restart",
             lambda: "Action restart from errd hkapp" in hk(sim, "node1", "logview", "-m", MODULE))
    wait_for("restarted", lambda: starts(sim, "node1") > n)
    wait_state(sim, "node1", "ALONE (Ready)")

    # custom: the checker program reports down -> restart.
    n = starts(sim, "node1")
    hk(sim, "node1", "set", "-m", MODULE, "-r", "custom.c", "-v", "down")
    wait_for("c_c restart", fired(sim, "node1", "c_c", "restart"))
    wait_for("restarted", lambda: starts(sim, "node1") > n)
    wait_state(sim, "node1", "ALONE (Ready)")

    # ip: the VIP disappears -> stopstart, which puts it back.
    sim.exec("node1", ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"])
    wait_for(f"ip_{vip} stopstart", fired(sim, "node1", f"ip_{vip}", "stopstart"))
    wait_for("VIP back", lambda: has_vip(sim, "node1", vip))
    wait_state(sim, "node1", "ALONE (Ready)")

    # ping: the target is cut off -> wait while it is; back when healed.
    sim.cut("node1", "node2")
    wait_for("p_gw wait", fired(sim, "node1", "p_gw", "wait"))
    wait_state(sim, "node1", "WAIT (NotReady)")
    assert not has_vip(sim, "node1", vip)
    sim.heal()
    wait_state(sim, "node1", "ALONE (Ready)")

    # intf: the link goes down -> wait.
    sim.exec("node1", ["ip", "link", "set", "eth1", "down"])
    wait_for("i_lan1 wait", fired(sim, "node1", "i_lan1", "wait"))
    wait_state(sim, "node1", "WAIT (NotReady)")
    sim.exec("node1", ["ip", "link", "set", "eth1", "up"])
    wait_state(sim, "node1", "ALONE (Ready)")

    # module: the module depended upon stops -> wait.
    hk(sim, "node1", "stop", "-m", "other")
    wait_for("m_other wait", fired(sim, "node1", "m_other", "wait"))
    wait_state(sim, "node1", "WAIT (NotReady)")
    hk(sim, "node1", "start", "-m", "other")
    wait_state(sim, "node1", "ALONE (Ready)")
    hk(sim, "node1", "stop", "-m", MODULE)


def test_maxloop_stops_the_module_on_the_fourth_error(make_sim, tmp_path):
    sim = make_sim(nodes=1, daemon=True)
    conf = """<!DOCTYPE safe>
<safe>
  <service mode="light" maxloop="3" loop_interval="1">
    <check><custom ident="c" exec="forever" action="restart"/></check>
    <user/>
  </service>
</safe>
"""
    install(sim, tmp_path, ["node1"], conf, {**TRACING, "forever": "#!/bin/sh\nexec sleep 100000\n"})
    hk(sim, "node1", "start", "-m", MODULE)
    for error in range(1, 5):
        hk(sim, "node1", "set", "-m", MODULE, "-r", "custom.c", "-v", "up")
        hk(sim, "node1", "set", "-m", MODULE, "-r", "custom.c", "-v", "down")
        if error < 4:
            wait_for(f"restart {error}", lambda e=error: trace(sim, "node1").count("start_prim ") == e + 1)
            wait_state(sim, "node1", "ALONE (Ready)")
    wait_state(sim, "node1", "STOP (NotReady)")
    assert trace(sim, "node1").count("start_prim ") == 4
    assert "maxloop reached" in hk(sim, "node1", "logview", "-m", MODULE)
    # incloop: the same budget, for scripts that restart an application themselves.
    hk(sim, "node1", "start", "-m", MODULE)
    codes = [sim.exec("node1", ["hakit", "incloop", "-m", MODULE, "-i", "t"], check=False).returncode
             for _ in range(4)]
    assert codes == [0, 0, 0, 1]
    hk(sim, "node1", "stop", "-m", MODULE)


def test_default_primary_takes_the_role_back_after_reintegration(make_sim, tmp_path):
    sim = make_sim(nodes=2, daemon=True)
    vip = sim.spare_addr(0, 1)
    install(sim, tmp_path, ["node1", "node2"], mirror_conf(vip, service='defaultprim="node1"'))
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)")
    # An operator's restart runs the application's scripts again in place.
    hk(sim, "node1", "restart", "-m", MODULE)
    assert trace(sim, "node1").count("start_prim ") == 2 and state(sim, "node1") == "PRIM (Ready)"
    sim.kill("node1")
    wait_state(sim, "node2", "ALONE (Ready)")
    sim.revive("node1")
    hk(sim, "node1", "start", "-m", MODULE)
    # node1 comes back as secondary, then, being the default primary, takes PRIM back.
    wait_state(sim, "node1", "PRIM (Ready)")
    wait_state(sim, "node2", "SECOND (Ready)")
    assert has_vip(sim, "node1", vip) and not has_vip(sim, "node2", vip)
    assert "start_second " in trace(sim, "node1")


WRITER = r"""
import os, sys
path, n = sys.argv[1], 0
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
while True:
    n += 1
    os.write(fd, b"record %08d\n" % n)
    os.fsync(fd)
    print(n, flush=True)  # acknowledged: the application was told it is durable
"""


def test_mirror_replicates_and_keeps_every_acknowledged_record_across_a_crash(make_sim, tmp_path):
    sim = make_sim(nodes=2, daemon=True, paths=("/srv/rep",))
    vip = sim.spare_addr(0, 1)
    install(sim, tmp_path, ["node1", "node2"], mirror_conf(vip, '<rfs><replicated dir="/srv/rep"/></rfs>'))
    sim.exec("node1", ["sh", "-c", "mkdir -p /srv/rep/d && echo before > /srv/rep/d/old"])
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=30)
    wait_state(sim, "node1", "PRIM (Ready)")
    # What was there before the secondary joined came over with the full synchronisation.
    assert (sim.host_path("node2", "/srv/rep") / "d/old").read_text() == "before\n"
    refused = sim.exec("node2", ["sh", "-c", "echo x > /srv/rep/x"], check=False, capture=True)
    assert refused.returncode != 0

    writer = sim.popen("node1", ["python3", "-c", WRITER, "/srv/rep/records"],
                       stdout=subprocess.PIPE, text=True)
    acked = 0
    assert writer.stdout is not None
    for line in writer.stdout:
        acked = int(line)
        if acked >= 200:
            break
    sim.kill("node1")
    for line in writer.stdout:  # what was acknowledged up to the crash
        acked = int(line)
    writer.wait()
    wait_state(sim, "node2", "ALONE (Ready)")
    records = (sim.host_path("node2", "/srv/rep") / "records").read_text().splitlines()
    assert len(records) >= acked
    assert records[:acked] == [f"record {i:08d}" for i in range(1, acked + 1)]
    # node2 now serves the directory read-write.
    sim.exec("node2", ["sh", "-c", "echo after > /srv/rep/d/new"])


# Writes one record each time it reads a line, and answers once write(2) returned.
STEP_WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
for n, _ in enumerate(sys.stdin, 1):
    os.write(fd, b"record %08d\n" % n)
    print(n, flush=True)
"""


def node_cmdlines(sim, node: str, program: bytes) -> list[list[bytes]]:
    out = []
    for pid in (sim.cgroup / node / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if Path(cmdline[0].decode()).name == program.decode():
                out.append(cmdline)
    return out


def test_applied_write_policy_returns_each_write_once_the_secondary_has_it(make_sim, tmp_path):
    sim = make_sim(nodes=2, daemon=True, paths=("/srv/rep",))
    install(sim, tmp_path, ["node1", "node2"],
            mirror_conf(sim.spare_addr(0, 1), '<rfs writes="applied"><replicated dir="/srv/rep"/></rfs>'))
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=30)
    [primary] = [c for c in node_cmdlines(sim, "node1", b"hakit-rfs") if c[1] == b"primary"]
    assert b"--strict" in primary
    copy = sim.host_path("node2", "/srv/rep") / "records"
    writer = sim.popen("node1", ["python3", "-c", STEP_WRITER, "/srv/rep/records"],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdin is not None and writer.stdout is not None
    try:
        for n in range(1, 51):
            writer.stdin.write("\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == f"{n}\n"
            # The buffered policy would have it there only within the stream's 100 ms delay.
            assert copy.stat().st_size == 16 * n
    finally:
        writer.kill()
        writer.wait()


def test_zero_loss_over_primary_crashes_and_full_secondary_disks(make_sim, tmp_path):
    sim = make_sim(nodes=2, daemon=True, paths=(zeroloss.REPDIR,),
                   sizes={zeroloss.REPDIR: zeroloss.DISK_SIZE})
    result = zeroloss.run(sim, tmp_path, rounds=3, seed=3, disk=True)
    assert result.rounds == 5 and result.acked > 0
    assert result.lost == 0, result.details
    assert result.healed == 1 and result.refused == 1, result.details


def test_secondary_outage_during_live_writes_blocks_nothing_and_ends_identical(make_sim, tmp_path):
    sim = make_sim(nodes=2, daemon=True, paths=("/srv/rep",))
    vip = sim.spare_addr(0, 1)
    install(sim, tmp_path, ["node1", "node2"], mirror_conf(vip, '<rfs><replicated dir="/srv/rep"/></rfs>'))
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=30)
    writer = sim.popen("node1", ["python3", "-c", WRITER, "/srv/rep/records"],
                       stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    try:
        acks: list[float] = []

        def ack_until(n: int) -> None:
            for _ in writer.stdout:
                acks.append(time.monotonic())
                if len(acks) >= n:
                    return

        ack_until(100)
        sim.kill("node2")
        killed = time.monotonic()
        ack_until(len(acks) + 100)
        # The application waited for the lost secondary no longer than its detection.
        assert acks[-1] - killed < 5
        wait_state(sim, "node1", "ALONE (Ready)")
        sim.revive("node2")
        hk(sim, "node2", "start", "-m", MODULE)
        wait_state(sim, "node2", "SECOND (Ready)", timeout=60)
        ack_until(len(acks) + 100)
    finally:
        writer.kill()
        writer.wait()
    wait_state(sim, "node1", "PRIM (Ready)")
    mine = (sim.host_path("node1", "/srv/rep") / "records").read_bytes()
    deadline = time.monotonic() + 5
    while (sim.host_path("node2", "/srv/rep") / "records").read_bytes() != mine:
        assert time.monotonic() < deadline, "the secondary's copy differs after reintegration"
        time.sleep(0.1)


def module_pid(sim, node: str) -> int:
    procs = (sim.cgroup / node / "cgroup.procs").read_text().split()
    for pid in procs:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"hakit.module.process" in cmdline and b"--cleanup" not in cmdline:
            return int(pid)
    raise AssertionError(f"no module process on {node}")


def test_a_crashed_module_process_is_cleaned_up_before_it_restarts(make_sim, tmp_path):
    """When the new process cannot take over what the dead one ran (here its hakit-rfs
    died with it; tests/test_resume.py has the case where it can)."""
    sim = make_sim(nodes=2, daemon=True, paths=("/srv/rep",))
    vip = sim.spare_addr(0, 1)
    install(sim, tmp_path, ["node1", "node2"], mirror_conf(vip, '<rfs><replicated dir="/srv/rep"/></rfs>'))
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=30)
    os.kill(module_pid(sim, "node1"), signal.SIGKILL)
    os.kill(int(node_pids(sim, "node1", "hakit-rfs")[0]), signal.SIGKILL)
    # The application of the dead primary is stopped (with force), its VIP and mount go,
    # node2 takes over, and node1's module comes back as secondary.
    wait_for("stop_prim force", lambda: "stop_prim force" in trace(sim, "node1"))
    wait_state(sim, "node1", "SECOND (Ready)", timeout=30)
    wait_state(sim, "node2", "PRIM (Ready)")
    assert not has_vip(sim, "node1", vip) and has_vip(sim, "node2", vip)
    log = hk(sim, "node1", "logview", "-m", MODULE)
    assert "Cannot take over what the module process that died ran" in log
    assert "Cleaning up after a crash in state PRIM" in log


def test_heartbeat_rejections_are_logged_once_a_minute_in_all_whatever_the_sources():
    """Sources are a forger's to choose: a flood from many addresses is one line a minute,
    which then counts what it left out, and keeps no state per source."""
    from hakit.heart.link import REJECT_LOG_INTERVAL_S, Heart, Lan

    logged: list[str] = []
    lan = Lan("default", "10.0.0.1", {"node2": "10.0.0.2"})
    heart = Heart(module=MODULE, node="node1", key=b"k" * 32, port=9307, pulse=0.2, timeout=0.6, lans=[lan],
                  incarnation=1, resources=None, log=lambda level, cat, msg: logged.append(msg),  # type: ignore[arg-type]
                  on_change=lambda: None)
    for i in range(10000):
        heart._rejected(lan, f"10.9.{i // 250}.{i % 250}", "bad authentication tag")
    assert len(logged) == 1 and "10.9.0.0" in logged[0]
    heart._reject_log.since -= REJECT_LOG_INTERVAL_S  # a minute later
    heart._rejected(lan, "10.9.99.1", "bad authentication tag")
    assert len(logged) == 2 and "(9999 more left out before)" in logged[1], logged
    assert not [k for k, v in vars(heart).items() if isinstance(v, dict) and len(v) > 100]
