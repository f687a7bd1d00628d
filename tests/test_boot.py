"""A node's boot and shutdown in the simulated cluster: which modules hakitd starts when
the node boots (boot="on|off|auto|ignore", `hakit boot -m AM on|off|status`), and a
clean shutdown (`sim reboot`: hakitd stopped as systemd stops it) that hands a mirror
over without waiting for a heartbeat timeout, the module coming back by itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cluster import MODULE, hk, install, mirror_conf, state, trace, wait_state
from tests.helpers import node_pids, wait_for

pytestmark = pytest.mark.root

REP = "/srv/rep"
LIGHT = '<!DOCTYPE safe>\n<safe><service mode="light" {boot}><user/></service></safe>\n'


def logview(sim, node: str) -> str:
    return hk(sim, node, "logview", "-m", MODULE)


def not_started_at_boot(sim, node: str) -> bool:
    """hakitd answers before its boot starts anything: give that a moment first."""
    time.sleep(1.0)
    return state(sim, node) == "STOP (NotReady)"


def test_a_mirror_primary_rebooted_hands_over_at_once_and_comes_back_as_secondary(make_sim, tmp_path):
    sim = make_sim(nodes=2, daemon=True, paths=(REP,))
    conf = mirror_conf(sim.spare_addr(0, 1), f'<rfs><replicated dir="{REP}"/></rfs>', service='boot="auto"')
    install(sim, tmp_path, ["node1", "node2"], conf)
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=60)

    sim.reboot("node1")
    # The primary stopped with the node's shutdown and said so: node2 took over on its last
    # heartbeats, not after losing it.
    log2 = logview(sim, "node2")
    took = log2.find("Peer node1 is STOP: taking over")
    assert took >= 0 and "lost: silent" not in log2[:took], log2
    assert state(sim, "node2") in ("ALONE (Ready)", "PRIM (Ready)")
    sim.exec("node2", ["sh", "-c", f"echo while-node1-rebooted > {REP}/new && sync {REP}/new"])
    # boot="auto": it ran when the node went down, so hakitd starts it; it reintegrates.
    wait_state(sim, "node1", "SECOND (Ready)", timeout=60)
    wait_state(sim, "node2", "PRIM (Ready)")
    assert (sim.host_path("node1", REP) / "new").read_text() == "while-node1-rebooted\n"
    assert "Action start requested by boot" in logview(sim, "node1")

    # An operator's stop before the reboot: boot="auto" leaves it stopped.
    hk(sim, "node1", "stop", "-m", MODULE)
    sim.reboot("node1")
    assert not_started_at_boot(sim, "node1")


def test_boot_on_off_and_the_node_setting_under_ignore(make_sim, tmp_path):
    sim = make_sim(nodes=1, daemon=True)
    install(sim, tmp_path / "ignore", ["node1"], LIGHT.format(boot=""))
    said = hk(sim, "node1", "boot", "-m", MODULE, "status").strip()
    assert said == f"{MODULE}: boot off (nothing set on this node)"
    said = hk(sim, "node1", "boot", "-m", MODULE, "on").strip()
    assert said == f"{MODULE}: boot on (hakit boot on on this node)"
    assert "usersetting.boot" in hk(sim, "node1", "state", "-m", MODULE, "-v")
    sim.reboot("node1")
    wait_state(sim, "node1", "ALONE (Ready)")
    assert "start_prim " in trace(sim, "node1")
    hk(sim, "node1", "boot", "-m", MODULE, "off")
    sim.reboot("node1")
    assert not_started_at_boot(sim, "node1")

    # The configuration wins over the node's setting; its word is what status says.
    hk(sim, "node1", "module", "uninstall", "-m", MODULE)
    install(sim, tmp_path / "off", ["node1"], LIGHT.format(boot='boot="off"'))
    hk(sim, "node1", "boot", "-m", MODULE, "on")
    assert hk(sim, "node1", "boot", "-m", MODULE, "status").strip() == \
        f'{MODULE}: boot off (boot="off" in its configuration)'
    sim.reboot("node1")
    assert not_started_at_boot(sim, "node1")
    hk(sim, "node1", "module", "uninstall", "-m", MODULE)
    install(sim, tmp_path / "on", ["node1"], LIGHT.format(boot='boot="on"'))
    sim.reboot("node1")
    wait_state(sim, "node1", "ALONE (Ready)")


def test_hakit_shutdown_stops_every_module_as_the_node_shutdown_does(make_sim, tmp_path):
    sim = make_sim(nodes=1, daemon=True)
    install(sim, tmp_path, ["node1"], LIGHT.format(boot='boot="auto"'))
    hk(sim, "node1", "start", "-m", MODULE)
    wait_state(sim, "node1", "ALONE (Ready)")
    assert hk(sim, "node1", "shutdown").strip() == f"{MODULE}: stopped"
    assert state(sim, "node1") == "STOP (NotReady)"
    assert "Action shutdown requested by root" in logview(sim, "node1")
    # As after the node's own shutdown, boot="auto" starts it again at the next boot.
    sim.reboot("node1")
    wait_for("the module started at boot", lambda: state(sim, "node1") == "ALONE (Ready)", timeout=30)


def test_hakit_start_says_what_it_knows_when_the_module_process_does_not_answer(make_sim, tmp_path):
    """Its prestart stops the module process (SIGSTOP), as a process too busy to answer:
    `hakit start` answers after 30 s with the state known then, not STOP, not never."""
    sim = make_sim(nodes=1, daemon=True)
    install(sim, tmp_path, ["node1"], LIGHT.format(boot=""),
            scripts={"prestart": "#!/bin/sh\nkill -STOP $PPID\n"})
    began = time.monotonic()
    said = hk(sim, "node1", "start", "-m", MODULE)
    took = time.monotonic() - began
    assert 30 <= took < 45, took
    assert "its process has not answered for 30 s" in said and "STOP (NotReady)" not in said, said
    stopped = [p for p in node_pids(sim, "node1")
               if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"]
    assert stopped
    for pid in stopped:
        sim.exec("node1", ["kill", "-CONT", pid])
    wait_state(sim, "node1", "ALONE (Ready)")
