"""The mirror's virtual IP against the real kernel: aliases added and removed with netlink,
neighbours moved by gratuitous ARP alone, in a simulated cluster of 3 nodes (node3 is the client)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from hakit.testing.sim import Sim

pytestmark = pytest.mark.root

# Runs MirrorVip inside a node as the module process would: one instance, ops in sequence.
# stdin: {"userconfig", "ops": [op | ["wait", seconds]], "options"}; stdout: JSON results.
DRIVER = r"""
import asyncio, json, sys, tempfile
from pathlib import Path

from hakit.config.loader import load_module
from hakit.errors import HakitError
from hakit.runtime.log import ModuleLog
from hakit.store.module_store import ModuleStore
from hakit.vip.alias import MirrorVip


async def main(spec):
    with tempfile.TemporaryDirectory(prefix="hktest-vip-") as tmp:
        conf = Path(tmp, "userconfig.xml")
        conf.write_text(spec["userconfig"])
        store = ModuleStore(Path(tmp, "state.db"))
        vip = MirrorVip(load_module(conf).service.vip, ModuleLog("vipt", store), **spec.get("options", {}))
        results = []
        for op in spec["ops"]:
            if isinstance(op, list):
                await asyncio.sleep(op[1])
                continue
            try:
                await getattr(vip, op)()
                results.append({"op": op, "error": None, "held": vip.held()})
            except HakitError as exc:
                results.append({"op": op, "error": str(exc), "held": vip.held()})
        log = [[line.level, line.message] for line in store.logs()]
        store.close()
        return {"results": results, "log": log}


print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
"""


def userconfig(vip: str, interface: str = "", netmask: str = "", arpreroute: bool = False) -> str:
    itf = f' name="{interface}"' if interface else ""
    reroute = ' arpreroute="on"' if arpreroute else ""
    mask = f' netmask="{netmask}"' if netmask else ""
    return (
        '<safe><service mode="mirror"><heart><heartbeat name="default"/></heart><vip><interface_list>'
        f'<interface{itf}{reroute}><real_interface><virtual_addr addr="{vip}" where="one_side_alias"{mask}/>'
        "</real_interface></interface></interface_list></vip></service></safe>"
    )


def drive(sim: Sim, node: str, config: str, *ops: Any, **options: Any) -> dict[str, Any]:
    spec = {"userconfig": config, "ops": list(ops), "options": options}
    run = sim.exec(node, [sys.executable, "-c", DRIVER], input=json.dumps(spec), timeout=30)
    return json.loads(run.stdout)


def ok(outcome: dict[str, Any]) -> dict[str, Any]:
    errors = [r["error"] for r in outcome["results"] if r["error"]]
    assert not errors, errors
    return outcome


def vip_addrs(sim: Sim, node: str, vip: str) -> list[dict[str, Any]]:
    """The node's copies of vip: [{"ifname", "prefixlen", "label"}]."""
    links = json.loads(sim.exec(node, ["ip", "-j", "-4", "addr", "show"]).stdout)
    return [
        {"ifname": link["ifname"], "prefixlen": a["prefixlen"], "label": a.get("label")}
        for link in links
        for a in link.get("addr_info", [])
        if a["local"] == vip
    ]


def mac(sim: Sim, node: str) -> str:
    return json.loads(sim.exec(node, ["ip", "-j", "link", "show", "eth0"]).stdout)[0]["address"]


def neighbour(sim: Sim, node: str, addr: str) -> str | None:
    """node's ARP entry for addr (reading it sends nothing on the wire)."""
    entries = json.loads(sim.exec(node, ["ip", "-j", "-4", "neigh", "show", addr]).stdout)
    return entries[0].get("lladdr") if entries else None


def pings(sim: Sim, node: str, addr: str) -> bool:
    return sim.exec(node, ["ping", "-n", "-q", "-c", "1", "-W", "1", addr], check=False).returncode == 0


def neighbour_becomes(sim: Sim, node: str, addr: str, want: str, timeout: float = 1.0) -> str | None:
    deadline = time.monotonic() + timeout
    while (seen := neighbour(sim, node, addr)) != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return seen


def test_take_moves_neighbours_by_gratuitous_arp_and_release_leaves_nothing(make_sim):
    sim = make_sim(nodes=3)
    vip = sim.spare_addr(0, 1)
    config = userconfig(vip)  # no interface name: the one whose subnet holds the VIP

    taken = ok(drive(sim, "node1", config, "take"))
    assert taken["results"][-1]["held"] is True
    assert vip_addrs(sim, "node1", vip) == [{"ifname": "eth0", "prefixlen": 24, "label": "eth0:hk"}]
    assert ["E", f"virtual IP {vip}/24 on eth0 added, announced by gratuitous ARP"] in taken["log"]
    assert pings(sim, "node3", vip)
    assert neighbour(sim, "node3", vip) == mac(sim, "node1")

    released = ok(drive(sim, "node1", config, "release"))
    assert released["results"][-1]["held"] is False
    assert vip_addrs(sim, "node1", vip) == []
    assert ["E", f"virtual IP {vip}/24 from eth0 removed"] in released["log"]

    # node3 still believes node1; only node2's announcement can change that, since
    # nothing is sent to the VIP before the check.
    ok(drive(sim, "node2", config, "take"))
    assert neighbour_becomes(sim, "node3", vip, mac(sim, "node2")) == mac(sim, "node2")
    assert pings(sim, "node3", vip)

    # Idempotent, within one run and across runs.
    again = ok(drive(sim, "node2", config, "release", "release"))
    assert [r["held"] for r in again["results"]] == [False, False]
    ok(drive(sim, "node2", config, "release"))
    assert vip_addrs(sim, "node2", vip) == []
    assert not pings(sim, "node3", vip)


def test_arpreroute_repeats_the_announcement_while_held(make_sim):
    sim = make_sim(nodes=3)
    vip = sim.spare_addr(0, 1)
    node1 = mac(sim, "node1")
    ok(drive(sim, "node1", userconfig(vip), "take"))
    # A neighbour that missed the announcement (here: told otherwise since).
    wrong = "02:00:00:00:00:99"
    sim.exec("node3", ["ip", "neigh", "replace", vip, "lladdr", wrong, "nud", "stale", "dev", "eth0"])
    ok(drive(sim, "node1", userconfig(vip), "take", ["wait", 0.5]))  # without arpreroute: once
    assert neighbour_becomes(sim, "node3", vip, node1) == node1
    sim.exec("node3", ["ip", "neigh", "replace", vip, "lladdr", wrong, "nud", "stale", "dev", "eth0"])
    time.sleep(0.3)
    assert neighbour(sim, "node3", vip) == wrong  # nothing repeats after the take's rounds

    # With arpreroute the holder corrects it while still holding, with no take in between.
    start = time.monotonic()
    spec = {
        "userconfig": userconfig(vip, arpreroute=True),
        "ops": ["take", ["wait", 1.5], "release"],
        "options": {"reroute_interval": 0.2},
    }
    holder = sim.popen(
        "node1", [sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdin is not None
        holder.stdin.write(json.dumps(spec))
        holder.stdin.close()
        time.sleep(0.5)  # past the take's own rounds
        sim.exec("node3", ["ip", "neigh", "replace", vip, "lladdr", wrong, "nud", "stale", "dev", "eth0"])
        assert neighbour_becomes(sim, "node3", vip, node1) == node1
        assert time.monotonic() - start < 1.5, "corrected only by the release"
        assert holder.stdout is not None
        out = holder.stdout.read()
        holder.wait(20)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    ok(json.loads(out))
    assert vip_addrs(sim, "node1", vip) == []


def test_clear_stale_removes_what_a_crashed_run_left(make_sim):
    sim = make_sim(nodes=2)
    vip = sim.spare_addr(0, 2)
    config = userconfig(vip, interface="eth0", netmask="255.255.255.128")
    ok(drive(sim, "node1", config, "take"))  # the run exits holding it: as after a crash
    assert vip_addrs(sim, "node1", vip) == [{"ifname": "eth0", "prefixlen": 25, "label": "eth0:hk"}]
    cleared = ok(drive(sim, "node1", config, "clear_stale", "clear_stale"))
    assert vip_addrs(sim, "node1", vip) == []
    assert [line for line in cleared["log"] if line[0] == "E"] == [
        ["E", f"virtual IP {vip}/25 from eth0 removed: left by a previous run of the module"]
    ]


def test_unusable_placements_are_clear_errors_and_add_nothing(make_sim):
    sim = make_sim(nodes=1)
    vip = sim.spare_addr(0, 1)
    cases = {
        userconfig(vip, interface="eth9"): f"virtual IP {vip}: interface eth9 does not exist on this node",
        userconfig("192.0.2.7"): (
            "virtual IP 192.0.2.7: no interface of this node has an address in its subnet; "
            'name one with <interface name="…">'
        ),
        userconfig("192.0.2.7", interface="eth0"): (
            "virtual IP 192.0.2.7: no address of eth0 is in a subnet holding it; "
            'give <virtual_addr netmask="…">'
        ),
        userconfig("2001:db8::7", interface="eth0"): (
            "virtual IP 2001:db8::7: only IPv4 addresses are supported"
        ),
    }
    for config, message in cases.items():
        outcome = drive(sim, "node1", config, "take")
        assert outcome["results"] == [{"op": "take", "error": message, "held": False}]
    # A valid address before a bad one is not left behind (all or nothing).
    both = userconfig(vip).replace(
        "</real_interface>", '<virtual_addr addr="192.0.2.7"/></real_interface>'
    )
    outcome = drive(sim, "node1", both, "take")
    assert outcome["results"][0]["error"].startswith("virtual IP 192.0.2.7:")
    assert vip_addrs(sim, "node1", vip) == []
    assert vip_addrs(sim, "node1", "192.0.2.7") == []
