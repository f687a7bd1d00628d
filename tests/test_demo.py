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
from tests.web_client import Client

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
        # The console's URL and its demo administrator, as `make demo` prints them, let one in.
        said = demo.describe(sim)
        line = next(ln for ln in said.splitlines() if ln.startswith("Web console: "))
        assert f"https://{sim.addr('node1')}:9453/" in line
        password = line.rsplit("password ", 1)[1]
        console = Client(sim.addr("node2"), sim.host_path("node2", "/etc/hakit/pki/ca.crt"))
        assert console.login(demo.DEMO_ADMIN, password).json()["role"] == "admin"
        sim.kill("node1")
        wait_for("served without node1", lambda: all(fetch(vip) in ("node2", "node3") for _ in range(30)),
                 timeout=10)
    finally:
        sim.down()
