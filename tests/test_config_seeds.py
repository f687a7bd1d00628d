"""The example configurations of SafeKit's guide (chapter 15), read unchanged.

tests/data/config/seeds/ holds each example as the guide prints it, DOCTYPE and
<macro> before <safe> included.  The Windows examples (15.1.2.1, 15.1.2.2, 15.3.1)
replicate e:\\repdir-like paths, which cannot exist on Linux: their faithful copy
(*-windows.xml) must fail with that one problem and nothing else, and a Linux twin
(*-linux.xml) where only the path changes must validate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hakit.config.cluster_model import Cluster
from hakit.config.loader import load_cluster, load_module, read_file
from hakit.config.module_model import ModuleConfig, Service
from tests.config_support import REPO, SEEDS, hakit

TWO_LANS = SEEDS / "15.1.1-cluster-two-lans.xml"
THREE_NODES = SEEDS / "15.2.1-cluster-three-nodes.xml"

# Each module example with the cluster.xml of its section of the guide.
MODULES = {
    "15.1.2.1-mirror-linux.xml": TWO_LANS,
    "15.1.2.2-mirror-flow-linux.xml": TWO_LANS,
    "15.2.2.1-farm.xml": THREE_NODES,
    "15.2.2.2-farm-tcp-rules.xml": THREE_NODES,
    "15.2.2.3-farm-udp-rules.xml": THREE_NODES,
    "15.2.2.4-farm-power.xml": THREE_NODES,
    "15.2.2.5-farm-scriptcontrol.xml": THREE_NODES,
    "15.3.1-hyperv-linux.xml": TWO_LANS,
    "15.4.1-softerrd.xml": TWO_LANS,
    "15.5-tcp-checker.xml": THREE_NODES,
}

# Faithful Windows copy -> (line of <replicated>, the path as expanded, Linux twin).
WINDOWS = {
    "15.1.2.1-mirror-windows.xml": (19, "e:\\repdir", "15.1.2.1-mirror-linux.xml"),
    "15.1.2.2-mirror-flow-windows.xml": (19, "e:\\repdir", "15.1.2.2-mirror-flow-linux.xml"),
    "15.3.1-hyperv-windows.xml": (16, "E:\\Hyper-V\\Ubuntu20-1", "15.3.1-hyperv-linux.xml"),
}

TEMPLATES = sorted((REPO / "templates").glob("*/conf/userconfig.xml"))


@pytest.fixture(autouse=True)
def _isolated_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `config check` also reads the node's installed cluster.xml: never the host's.
    monkeypatch.setenv("HAKIT_ROOT", str(tmp_path / "root"))


def service(name: str) -> Service:
    return load_module(SEEDS / name, load_cluster(MODULES[name])).service


def user_vars(svc: Service) -> dict[str, str]:
    assert svc.user is not None
    return {v.name: v.value for v in svc.user.vars}


# ---------------------------------------------------------------- through the command


@pytest.mark.parametrize("cluster", [TWO_LANS, THREE_NODES], ids=lambda p: p.name)
def test_cluster_examples_pass_check(capsys: pytest.CaptureFixture[str], cluster: Path) -> None:
    run = hakit(capsys, "config", "check", cluster)
    assert (run.code, run.err, run.out) == (0, "", f"{cluster}: ok\n")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_examples_pass_check(capsys: pytest.CaptureFixture[str], name: str) -> None:
    module = SEEDS / name
    run = hakit(capsys, "config", "check", MODULES[name], module)
    assert run.err == ""
    assert run.code == 0
    assert run.out.splitlines() == [f"{MODULES[name]}: ok", f"{module}: ok"]


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_windows_examples_fail_only_on_their_path(capsys: pytest.CaptureFixture[str], name: str) -> None:
    line, path, _twin = WINDOWS[name]
    module = SEEDS / name
    run = hakit(capsys, "config", "check", TWO_LANS, module)
    assert run.code == 1
    assert run.err_lines == [f"{module}:{line}: <replicated dir>: '{path}' is not an absolute Linux path"]
    assert run.out == f"{TWO_LANS}: ok\n"


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_linux_twins_change_nothing_but_the_path(name: str) -> None:
    _line, _path, twin = WINDOWS[name]
    windows = (SEEDS / name).read_text()
    comment, linux = (SEEDS / twin).read_text().split("\n", 1)
    assert comment.startswith("<!-- Linux adaptation")
    adapted = windows.replace("e:\\repdir", "/repdir").replace("E:\\Hyper-V", "/repdir")
    assert linux == adapted.replace("%VM_PATH%\\%VM_NAME%", "%VM_PATH%/%VM_NAME%")


@pytest.mark.parametrize("userconfig", TEMPLATES, ids=lambda p: p.parent.parent.name)
def test_shipped_templates_pass_check(capsys: pytest.CaptureFixture[str], userconfig: Path) -> None:
    run = hakit(capsys, "config", "check", TWO_LANS, userconfig)
    assert (run.code, run.err) == (0, "")


def test_every_template_is_checked() -> None:
    assert {p.parent.parent.name for p in TEMPLATES} >= {"mirror", "farm", "softerrd", "customchecker"}


# ---------------------------------------------------------------- the models read


def test_15_1_1_two_lans() -> None:
    cluster = load_cluster(TWO_LANS)
    assert [lan.name for lan in cluster.lan_list] == ["default", "private"]
    assert cluster.node_names == ["node1", "node2"]
    assert cluster.addr("node2", "default") == "10.0.0.108"
    assert cluster.addr("node1", "private") == "10.1.0.107"


def test_15_2_1_three_nodes() -> None:
    cluster = load_cluster(THREE_NODES)
    assert isinstance(cluster, Cluster)
    assert cluster.node_names == ["node1", "node2", "node3"]
    assert cluster.addr("node3", "default") == "10.0.0.106"


def test_15_1_2_1_mirror() -> None:
    svc = service("15.1.2.1-mirror-linux.xml")
    assert (svc.mode, svc.boot) == ("mirror", "on")
    assert svc.heart is not None
    assert [(h.name, h.ident) for h in svc.heart.heartbeats] == [("default", None)]
    assert svc.vip is not None
    [itf] = svc.vip.interfaces.interfaces
    assert itf.check and itf.real is not None and itf.virtual is None
    [vip] = svc.vip.addrs
    assert (vip.addr, vip.where, vip.check) == ("10.1.0.126", "one_side_alias", True)
    assert svc.rfs is not None
    assert [r.dir for r in svc.rfs.replicated] == ["/repdir"]
    # The SERVICES macro, defined inside <safe>, reaches the scripts through <var>.
    assert user_vars(svc) == {"SERVICES": "service1, service2"}


def test_15_1_2_2_dedicated_replication_lan() -> None:
    svc = service("15.1.2.2-mirror-flow-linux.xml")
    assert svc.heart is not None
    assert [(h.name, h.ident) for h in svc.heart.heartbeats] == [("default", None), ("private", "flow")]


@pytest.mark.parametrize("name", ["15.2.2.1-farm.xml", "15.2.2.5-farm-scriptcontrol.xml"])
def test_macro_before_safe(name: str) -> None:
    loaded = read_file(SEEDS / name)
    assert isinstance(loaded.model, ModuleConfig)
    assert loaded.model.macros == {"SERVICES": "service1, service2"}
    assert user_vars(loaded.model.service) == {"SERVICES": "service1, service2"}


def test_15_2_2_1_farm() -> None:
    svc = service("15.2.2.1-farm.xml")
    assert svc.mode == "farm"
    assert svc.farm is not None and [lan.name for lan in svc.farm.lans] == ["default"]
    assert svc.vip is not None and not svc.vip.scriptcontrol
    [itf] = svc.vip.interfaces.interfaces
    assert itf.virtual is not None and itf.virtual.type == "vmac_directed"
    [vip] = svc.vip.addrs
    assert (vip.addr, vip.where, vip.check) == ("10.1.0.126", "alias", True)
    assert svc.vip.loadbalancing is not None
    [group] = svc.vip.loadbalancing.groups
    assert group.name == "FarmProto" and group.cluster is None
    assert [(r.port, r.proto, r.filter) for r in group.rules] == [("9010", "tcp", "on_port")]


def test_15_2_2_2_tcp_rules() -> None:
    svc = service("15.2.2.2-farm-tcp-rules.xml")
    assert svc.vip is not None and svc.vip.loadbalancing is not None
    [group] = svc.vip.loadbalancing.groups
    assert [(r.port, r.filter) for r in group.rules] == [
        ("23", "on_port"),
        ("80", "on_addr"),
        ("443", "on_addr"),
        ("8080", "on_addr"),
        ("389", "on_port"),
    ]
    assert {r.proto for r in group.rules} == {"tcp"}
    assert {r.virtual_addr for r in group.rules} == {"*"}


def test_15_2_2_3_udp_rules() -> None:
    svc = service("15.2.2.3-farm-udp-rules.xml")
    assert svc.vip is not None and svc.vip.loadbalancing is not None
    [group] = svc.vip.loadbalancing.groups
    assert [(r.port, r.proto, r.filter) for r in group.rules] == [
        ("53", "udp", "on_ipid"),
        ("1645", "udp", "on_ipid"),
    ]


def test_15_2_2_4_power() -> None:
    svc = service("15.2.2.4-farm-power.xml")
    assert svc.vip is not None and svc.vip.loadbalancing is not None
    weights = {
        g.name: ({h.name: h.power for h in g.cluster.hosts} if g.cluster else {}, g.rules[0].port)
        for g in svc.vip.loadbalancing.groups
    }
    assert weights == {
        "http_service": ({"node1": 3, "node2": 1, "node3": 1}, "80"),
        "https_service": ({"node1": 1, "node2": 3, "node3": 1}, "443"),
        "httpproxy_service": ({"node1": 1, "node2": 1, "node3": 3}, "8080"),
    }


def test_15_2_2_5_scriptcontrol() -> None:
    svc = service("15.2.2.5-farm-scriptcontrol.xml")
    assert svc.vip is not None and svc.vip.scriptcontrol


def test_15_3_1_macros_in_paths_and_vars() -> None:
    svc = service("15.3.1-hyperv-linux.xml")
    assert svc.rfs is not None
    assert (svc.rfs.scripts, svc.rfs.acl, svc.rfs.namespacepolicy, svc.rfs.allocthreshold) == (
        True,
        True,
        0,
        10,
    )
    assert [r.dir for r in svc.rfs.replicated] == ["/repdir/Ubuntu20-1"]
    assert user_vars(svc) == {
        "VM_PATH": "/repdir/Ubuntu20-1",
        "VM_NAME": "Ubuntu20-1",
        "NORMAL_STOP": "stop",
        "FORCE_STOP": "stop",
    }


def test_15_3_1_windows_macros_expand_as_written() -> None:
    # Backslashes between macros are plain text: the Windows copy fails on its path only,
    # and its <var> still receives the value the guide describes.
    loaded = read_file(SEEDS / "15.3.1-hyperv-windows.xml")
    assert isinstance(loaded.model, ModuleConfig)
    assert user_vars(loaded.model.service)["VM_PATH"] == "E:\\Hyper-V\\Ubuntu20-1"


def test_15_4_1_process_monitoring() -> None:
    svc = service("15.4.1-softerrd.xml")
    assert svc.errd is not None
    assert [(p.name, p.action, p.klass, p.atleast, p.atmost) for p in svc.errd.procs] == [
        ("mybin.exe", "restart", "prim", 1, -1),
        ("myotherbin.exe", "stop", "second", 1, -1),
        ("myappli.exe", "restart_myappli", "myappli", 1, -1),
    ]
    assert svc.user is not None and svc.user.vars == ()


def test_15_5_tcp_checker() -> None:
    svc = service("15.5-tcp-checker.xml")
    assert svc.checks is not None
    [tcp] = svc.checks.tcp
    assert (tcp.ident, tcp.when, tcp.action) == ("Apache_80", "both", "restart")
    assert (tcp.to.addr, tcp.to.port) == ("localhost", 80)
    assert svc.vip is not None and svc.vip.loadbalancing is not None
    assert [r.filter for r in svc.vip.loadbalancing.groups[0].rules] == ["on_addr"]
    assert svc.user is not None
