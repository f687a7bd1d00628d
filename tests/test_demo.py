"""`make demo`: its farm serves HTTP on its VIP from the three nodes, and goes on when
one is killed (the client is the host, through the simulator's bridge)."""

from __future__ import annotations

import os
import urllib.request

import pytest

from hakit.testing import demo
from hakit.testing.sim import Sim
from tests.helpers import wait_for
from tests.sim_support import unique_sim_name

pytestmark = pytest.mark.root


def fetch(vip: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{vip}/", timeout=1) as answer:
            return answer.read().decode().strip()
    except OSError:
        return None


def test_demo_farm_serves_http_from_three_nodes_and_survives_a_kill(tmp_path):
    sim = Sim(unique_sim_name())
    try:
        demo.bring_up(sim, tmp_path, owner_pid=os.getpid())
        vip = sim.spare_addr(0, 2)
        seen: set[str] = set()
        wait_for("all three nodes answering", lambda: seen.update({fetch(vip) for _ in range(30)}) or
                 {"node1", "node2", "node3"} <= seen, timeout=30)
        sim.kill("node1")
        wait_for("served without node1", lambda: all(fetch(vip) in ("node2", "node3") for _ in range(30)),
                 timeout=10)
    finally:
        sim.down()
