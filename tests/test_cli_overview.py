"""The cluster overview in the CLI: `hakit state` without -m lists every module of the node,
`hakit status` shows every module on every node, a node down included."""

from __future__ import annotations

import pytest

from tests.cluster import MODULE, hk, install, mirror_conf, state, wait_state

pytestmark = pytest.mark.root

LIGHT = "solo"
LIGHT_CONF = '<!DOCTYPE safe>\n<safe><service mode="light"><user/></service></safe>\n'


def table(out: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """`hakit status` -> ({module: {column: cell}}, the lines below the table). Columns are
    cut where the header's words start: cells hold spaces ("PRIM (Ready)")."""
    lines = out.splitlines()
    header = lines[0]
    names = header.split()
    starts = [header.index(f" {n}") + 1 if i else 0 for i, n in enumerate(names)]
    rows: dict[str, dict[str, str]] = {}
    end = lines.index("") if "" in lines else len(lines)
    for line in lines[1:end]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[0]] = dict(zip(names[1:], cells[1:], strict=True))
    return rows, lines[end + 1:]


def test_state_lists_every_module_of_the_node_and_status_the_whole_cluster(make_sim, tmp_path):
    sim = make_sim(nodes=3, daemon=True)
    install(sim, tmp_path, ["node1", "node2"], mirror_conf(sim.spare_addr(0, 1)))
    hk(sim, "node1", "-H", "node1,node2", "-E", MODULE)
    install(sim, tmp_path, ["node3"], LIGHT_CONF, scripts={}, module=LIGHT, module_id=8)
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    hk(sim, "node3", "start", "-m", LIGHT)
    wait_state(sim, "node2", "SECOND (Ready)")
    wait_state(sim, "node1", "PRIM (Ready)")
    solo = state(sim, "node3", LIGHT)

    # Without -m: one line per module of this node, as -m prints it (which is unchanged).
    assert hk(sim, "node1", "state").splitlines() == [hk(sim, "node1", "state", "-m", MODULE).strip()]
    assert hk(sim, "node3", "state").startswith(f"{LIGHT}: {solo}  since ")
    refused = sim.exec("node1", ["hakit", "state", "-v"], check=False, capture=True)
    assert refused.returncode == 2 and "-v needs -m AM" in refused.stderr

    rows, notes = table(hk(sim, "node2", "status"))
    assert rows == {
        MODULE: {"MODE": "mirror", "node1": "PRIM (Ready)", "node2": "SECOND (Ready)", "node3": "-"},
        LIGHT: {"MODE": "light", "node1": "-", "node2": "-", "node3": solo},
    }
    assert notes == []

    # A node down: its column says so, why is below the table, and the command still succeeds.
    sim.kill("node2")
    wait_state(sim, "node1", "ALONE (Ready)")
    run = sim.exec("node1", ["hakit", "status"], check=False, capture=True)
    assert run.returncode == 0 and run.stderr == ""
    rows, notes = table(run.stdout)
    assert rows == {
        MODULE: {"MODE": "mirror", "node1": "ALONE (Ready)", "node2": "unreachable", "node3": "-"},
        # (a module installed without -E is configured on every node: node2 may have it)
        LIGHT: {"MODE": "light", "node1": "-", "node2": "unreachable", "node3": solo},
    }
    assert len(notes) == 1 and notes[0].startswith("node2 unreachable: ")
