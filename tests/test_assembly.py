"""The module process's builders (module/assembly.py), one by one, without starting
anything: where a module runs, its heartbeat LANs, and what refuses a start, with the
messages a user reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hakit.config.cluster_model import Cluster, ClusterNode, Lan, Lans
from hakit.config.loader import load_module
from hakit.config.module_model import Service
from hakit.errors import HakitError
from hakit.module import assembly
from hakit.module.catalog import Catalog
from hakit.module.datastate import DataState
from hakit.paths import Paths
from tests.config_support import write


def cluster(**lans: dict[str, str]) -> Cluster:
    """cluster.xml's model: LAN name -> {node: its address on that LAN}."""
    return Cluster(Lans(tuple(Lan(name=name, nodes=tuple(ClusterNode(n, a) for n, a in nodes.items()))
                              for name, nodes in lans.items())))


THREE_NODES = cluster(default={"node1": "10.0.0.1", "node2": "10.0.0.2", "node3": "10.0.0.3"},
                      private={"node1": "10.1.0.1", "node2": "10.1.0.2"})


def service(tmp_path: Path, mode: str, inside: str = "") -> Service:
    text = f'<safe><service mode="{mode}">{inside}</service></safe>\n'
    return load_module(write(tmp_path, text)).service


def paths_under(tmp_path: Path) -> Paths:
    root = tmp_path / "root"
    return Paths(etc=root / "etc", lib=root / "lib", log=root / "log", run=root / "run")


def test_only_a_light_module_runs_without_the_cluster_configuration(tmp_path: Path) -> None:
    p = paths_under(tmp_path)
    assert assembly.cluster_of("light", p) is None
    with pytest.raises(HakitError) as err:
        assembly.cluster_of("mirror", p)
    assert str(err.value) == (f"a mirror module needs the cluster configuration, and {p.cluster_xml} "
                              "is missing: write it, then 'hakit cluster config'")
    light = assembly.locate("am", "light", Catalog(p), p)
    assert light == assembly.Nodes(os.uname().nodename, [], None)


def test_this_node_must_be_one_of_the_module_s_and_a_mirror_has_two() -> None:
    assert assembly.peers_of("am", "farm", ["node1", "node2", "node3"], "node2") == ["node1", "node3"]
    assert assembly.peers_of("am", "mirror", ["node1", "node2"], "node1") == ["node2"]
    with pytest.raises(HakitError, match=r"^module am is configured on node2, node3, not on node1$"):
        assembly.peers_of("am", "farm", ["node2", "node3"], "node1")
    with pytest.raises(HakitError) as err:
        assembly.peers_of("am", "mirror", ["node1", "node2", "node3"], "node1")
    assert str(err.value) == ("a mirror module runs on exactly two nodes; am is configured on node1, node2, "
                              "node3: choose them with 'hakit -H \"nodeA,nodeB\" -E am'")


def test_heartbeats_go_on_the_lans_named_or_on_every_lan_that_joins_the_nodes(tmp_path: Path) -> None:
    c = THREE_NODES  # node3 has no address on "private"
    svc = service(tmp_path, "mirror")
    lans = assembly.heart_lans("am", "mirror", svc, c, "node1", ["node2"])
    assert [(lan.name, lan.local_addr, lan.peers) for lan in lans] == [
        ("default", "10.0.0.1", {"node2": "10.0.0.2"}), ("private", "10.1.0.1", {"node2": "10.1.0.2"})]
    # Only "default" joins all three.
    lans = assembly.heart_lans("am", "mirror", svc, c, "node1", ["node2", "node3"])
    assert [lan.name for lan in lans] == ["default"]
    svc = service(tmp_path, "mirror", '<heart><heartbeat name="private"/></heart>')
    lans = assembly.heart_lans("am", "mirror", svc, c, "node2", ["node1"])
    assert [lan.name for lan in lans] == ["private"]
    with pytest.raises(HakitError, match=r"^module am: this node \(node3\) has no address on LAN private "
                                         r"in cluster.xml$"):
        assembly.heart_lans("am", "mirror", svc, c, "node3", ["node1"])
    farm = service(tmp_path, "farm", '<farm><lan name="private"/></farm>')
    lans = assembly.heart_lans("am", "farm", farm, c, "node1", ["node2", "node3"])
    assert [(lan.name, lan.peers) for lan in lans] == [("private", {"node2": "10.1.0.2"})]


def test_no_lan_joining_the_nodes_is_refused(tmp_path: Path) -> None:
    c = cluster(default={"node1": "10.0.0.1", "node2": "10.0.0.2"})
    svc = service(tmp_path, "mirror")
    with pytest.raises(HakitError, match=r"^module am: no LAN of cluster.xml joins its nodes for "
                                         r"heartbeats$"):
        assembly.heart_lans("am", "mirror", svc, c, "node1", ["node3"])


def test_prim_is_refused_on_a_copy_that_may_not_be_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    assembly.refuse_prim("prim", "mirror", path)  # never ran here
    DataState("second", 1).save(path)
    with pytest.raises(HakitError, match=r"^prim refused: this node was secondary when the module last ran"):
        assembly.refuse_prim("prim", "mirror", path)
    assembly.refuse_prim("primforce", "mirror", path)
    assembly.refuse_prim("prim", "farm", path)
