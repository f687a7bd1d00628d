"""The cluster engine on a simulated cluster: mirror, farm and light automata,
heartbeats, failover rules, checkers acting, maxloop, split brain."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hakit.heart.protocol import Beat, encode
from tests.helpers import make_module

pytestmark = pytest.mark.root

MODULE = "am"
TRACE = "/var/lib/hakit/trace"
SCRIPTS = ("prestart", "start_prim", "stop_prim", "start_second", "stop_second", "start_both",
           "stop_both", "poststop")
TRACING = {s: f'#!/bin/sh\necho "{s} $*" >> {TRACE}\n' for s in SCRIPTS}


def mirror_conf(vip: str, extra: str = "", service: str = "") -> str:
    return f"""<!DOCTYPE safe>
<safe>
  <service mode="mirror" {service}>
    <heart><heartbeat name="default"/></heart>
    <vip><interface_list><interface>
      <real_interface><virtual_addr addr="{vip}" where="one_side_alias"/></real_interface>
    </interface></interface_list></vip>
    {extra}
    <user/>
  </service>
</safe>
"""


def hk(sim, node: str, *args: str, check: bool = True) -> str:
    run = sim.exec(node, ["hakit", *args], check=False, capture=True, timeout=60)
    if check and run.returncode != 0:
        raise AssertionError(f"{node}: hakit {' '.join(args)} -> {run.returncode}: {run.stderr}")
    return run.stdout + run.stderr


def state(sim, node: str, module: str = MODULE) -> str:
    out = hk(sim, node, "state", "-m", module)
    return out.split(":", 1)[1].split("since")[0].split("never")[0].strip()


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 15.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def wait_state(sim, node: str, expected: str, module: str = MODULE, timeout: float = 15.0) -> float:
    seen: list[str] = []

    def ok() -> bool:
        seen.append(state(sim, node, module))
        return seen[-1] == expected

    try:
        return wait_for(f"{node} {expected}", ok, timeout)
    except AssertionError:
        raise AssertionError(f"{node} never reached {expected} (last {seen[-1:]}):\n"
                             + hk(sim, node, "logview", "-m", module, "-A")) from None


def trace(sim, node: str) -> list[str]:
    path = sim.host_path(node, TRACE)
    return path.read_text().splitlines() if path.exists() else []


def has_vip(sim, node: str, vip: str) -> bool:
    out = sim.exec(node, ["ip", "-4", "-o", "addr", "show"], capture=True).stdout
    return f" {vip}/" in out


def install(sim, tmp_path: Path, nodes: list[str], conf: str, scripts: dict[str, str] | None = None,
            module: str = MODULE) -> None:
    archive = make_module(tmp_path / module, conf, scripts if scripts is not None else TRACING)
    for node in nodes:
        hk(sim, node, "module", "install", "-m", module, "-M", "7", str(archive))


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
    forged = encode(b"not the module key" * 2, Beat(MODULE, "node2", time.time_ns(), 1,
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
