"""<rfs scripts="on">: the module's start_rfs runs before its replication starts and
stop_rfs after it stopped, on both nodes, in their place among the other scripts."""

from __future__ import annotations

import pytest

from tests.cluster import MODULE, SCRIPTS, TRACE, hk, install, mirror_conf, trace, wait_state
from tests.mirror_app import REP

# Each script writes its name, its arguments, whether REP is served by hakit-rfs and the
# module it was told.
TRACING = {
    s: f'#!/bin/sh\necho "{s} $* mounted=$(grep -c " {REP} fuse" /proc/self/mounts) $SAFEMODULE" >> {TRACE}\n'
    for s in (*SCRIPTS, "start_rfs", "stop_rfs")
}


@pytest.mark.root
def test_start_rfs_and_stop_rfs_run_around_the_replication(make_sim, tmp_path):
    sim = make_sim(nodes=2, daemon=True, paths=(REP,))
    conf = mirror_conf(sim.spare_addr(0, 1), f'<rfs scripts="on"><replicated dir="{REP}"/></rfs>')
    install(sim, tmp_path, ["node1", "node2"], conf, scripts=TRACING)
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=60)
    wait_state(sim, "node1", "PRIM (Ready)")
    hk(sim, "node2", "stop", "-m", MODULE)
    wait_state(sim, "node2", "STOP (NotReady)", timeout=30)
    hk(sim, "node1", "stop", "-m", MODULE)
    wait_state(sim, "node1", "STOP (NotReady)", timeout=30)
    role = {"node1": "prim", "node2": "second"}
    for node in ("node1", "node2"):
        seen = [line for line in trace(sim, node) if not line.startswith(("start_both", "stop_both"))]
        assert seen == [
            f"prestart  mounted=0 {MODULE}",
            f"start_rfs  mounted=0 {MODULE}",
            f"start_{role[node]}  mounted=1 {MODULE}",
            f"stop_{role[node]}  mounted=1 {MODULE}",
            f"stop_rfs  mounted=0 {MODULE}",
            f"poststop  mounted=0 {MODULE}",
        ], node
