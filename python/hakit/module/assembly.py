"""How a module process is put together: one function per part it builds from the
module's configuration and the cluster's (where the module runs, its store, heart,
checkers, witness, failover rules, VIPs, replication).  Each computes what its part
needs and refuses, with the HakitError a user reads, what cannot be built;
module/process.py calls them in order and hands the parts to the automaton.

What a part tells the module process back (a peer's news, an action, a stream lost) is
passed in as a callback: the parts do not know the automaton.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hakit.check.base import Act, CheckContext, ModuleStateQuery
from hakit.check.registry import Checks
from hakit.check.splitbrain import Witness
from hakit.config.cluster_model import Cluster
from hakit.config.loader import load_cluster
from hakit.config.module_model import Heart as HeartConfig
from hakit.config.module_model import ModuleConfig, Service, StoreRetention
from hakit.config.rules import Rule, parse_rules
from hakit.errors import HakitError
from hakit.heart.incarnation import next_incarnation
from hakit.heart.link import Heart, Lan
from hakit.module.catalog import Catalog
from hakit.module.datastate import DataState
from hakit.module.failover import HEARTBEAT_RULE
from hakit.module.scripts import environment
from hakit.paths import Paths
from hakit.rfs.mirror import Replication, Security
from hakit.runtime import credentials
from hakit.runtime.identity import local_node
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.store.module_store import Level, ModuleStore
from hakit.store.retention import Retention
from hakit.vip.alias import MirrorVip, addrs_of
from hakit.vip.farm import FarmVip

HEART_PORT_BASE = 9300  # + module id: each module has its own heartbeat port


def open_store(name: str, svc: Service, p: Paths) -> ModuleStore:
    """The module's store, kept as its <retention> says."""
    kept = svc.retention or StoreRetention()
    return ModuleStore(p.module_db(name), Retention(kept.age, kept.size))


# -- where the module runs

@dataclass(frozen=True)
class Nodes:
    node: str  # this node
    peers: list[str]  # the module's other nodes (none for a light module)
    cluster: Cluster | None  # None: a light module on a node without cluster.xml


def cluster_of(mode: str, p: Paths) -> Cluster | None:
    """cluster.xml, which every mode but light needs."""
    if not p.cluster_xml.exists():
        if mode == "light":
            return None
        raise HakitError(f"a {mode} module needs the cluster configuration, and "
                         f"{p.cluster_xml} is missing: write it, then 'hakit cluster config'")
    return load_cluster(p.cluster_xml)


def peers_of(name: str, mode: str, nodes: list[str], node: str) -> list[str]:
    """The module's nodes other than this one, which must be one of them (a mirror's: exactly one)."""
    if node not in nodes:
        raise HakitError(f"module {name} is configured on {', '.join(nodes)}, not on {node}")
    peers = [n for n in nodes if n != node]
    if mode == "mirror" and len(peers) != 1:
        raise HakitError(
            f"a mirror module runs on exactly two nodes; {name} is configured on {', '.join(nodes)}: "
            f"choose them with 'hakit -H \"nodeA,nodeB\" -E {name}'"
        )
    return peers


def locate(name: str, mode: str, catalog: Catalog, p: Paths) -> Nodes:
    """This node and the module's other nodes."""
    cluster = cluster_of(mode, p)
    if cluster is None:
        return Nodes(os.uname().nodename, [], None)
    node = local_node(cluster)
    if mode == "light":
        return Nodes(node, [], cluster)
    return Nodes(node, peers_of(name, mode, catalog.nodes(name, cluster.node_names), node), cluster)


@dataclass(frozen=True)
class Site:
    """What the parts of one module on this node are built from."""

    name: str
    config: ModuleConfig
    paths: Paths
    catalog: Catalog
    nodes: Nodes
    log: ModuleLog
    resources: Resources

    @property
    def svc(self) -> Service:
        return self.config.service

    @property
    def mode(self) -> str:
        return self.config.service.mode


def forget_findings(resources: Resources) -> None:
    """What an earlier process of this module found reads `unknown` until checked again."""
    for stale in resources.matching("*"):
        # (usersetting.*: the node's settings, which hakitd keeps, not this process's findings;
        # script.*: how long a script took stays true after the process that ran it)
        if not stale.startswith(("module.", "usersetting.", "script.")):
            resources.set(stale, "unknown")


# -- heartbeats

def heart_lans(name: str, mode: str, svc: Service, cluster: Cluster, node: str,
               peers: list[str]) -> list[Lan]:
    """The LANs the heartbeats go on: a farm's <farm> LANs, the <heartbeat>s named, or else
    every LAN of cluster.xml that joins the module's nodes."""
    if mode == "farm":
        assert svc.farm is not None  # (the configuration model requires it of a farm)
        names = [lan.name for lan in svc.farm.lans]
    elif svc.heart is not None and svc.heart.heartbeats:
        names = [h.name for h in svc.heart.heartbeats]
    else:
        names = [lan.name for lan in cluster.lan_list
                 if all(cluster.addr(n, lan.name) for n in (node, *peers))]
    lans = []
    for lan in names:
        mine = cluster.addr(node, lan)
        if mine is None:
            raise HakitError(f"module {name}: this node ({node}) has no address on LAN {lan} in cluster.xml")
        addrs = {p: cluster.addr(p, lan) for p in peers}
        lans.append(Lan(lan, mine, {p: a for p, a in addrs.items() if a}))
    if not lans:
        raise HakitError(f"module {name}: no LAN of cluster.xml joins its nodes for heartbeats")
    return lans


def heart(site: Site, on_change: Callable[[], None]) -> Heart | None:
    """The module's heartbeats with its peers; None for a light module, which has none."""
    if site.mode == "light":
        return None
    cluster, node, peers = site.nodes.cluster, site.nodes.node, site.nodes.peers
    assert cluster is not None
    hc = site.svc.heart or HeartConfig()
    incarnation, trouble = next_incarnation(site.paths.module_var(site.name) / "heart.incarnation")
    if trouble:
        site.log(Level.CRITICAL, "heart", trouble)
    return Heart(
        module=site.name, node=node, key=site.catalog.key(site.name),
        port=HEART_PORT_BASE + site.catalog.module_id(site.name), pulse=hc.pulse, timeout=hc.timeout,
        lans=heart_lans(site.name, site.mode, site.svc, cluster, node, peers), incarnation=incarnation,
        resources=site.resources, log=site.log, on_change=on_change,
    )


# -- checkers and failover

def check_context(site: Site, *, act: Act, run_script: Callable[[str], Awaitable[int | None]],
                  module_state: ModuleStateQuery) -> CheckContext:
    """What every checker (and the witness) works with."""
    return CheckContext(
        module=site.name, node=site.nodes.node, paths=site.paths, config=site.config,
        resources=site.resources, log=site.log, act=act, run_script=run_script,
        env=environment(site.name, site.config, site.paths), module_state=module_state,
    )


def witness(ctx: CheckContext) -> Witness | None:
    """The <splitbrain> witness, if the module names one."""
    checks = ctx.config.service.checks
    return Witness(ctx) if checks is not None and checks.splitbrain is not None else None


def failover_rules(svc: Service, checks: Checks) -> list[Rule]:
    """The user's <failover> rules, then the checkers' generated ones, then a mirror's
    heartbeat rule (a mirror's replication rule comes with its replication)."""
    rules = parse_rules(svc.failover.rules) if svc.failover is not None else []
    rules += checks.rules()
    if svc.mode == "mirror":
        rules.append(HEARTBEAT_RULE)
    return rules


# -- virtual IPs

def mirror_vip(site: Site) -> MirrorVip | None:
    """The <vip> of a mirror or light module: addresses this node holds while primary."""
    return MirrorVip(site.svc.vip, site.log) if site.svc.vip is not None and site.mode != "farm" else None


def farm_vip(site: Site, *, on_change: Callable[[], None], on_filter: Callable[[], None]) -> FarmVip | None:
    """The shared addresses of a farm whose <vip> has a virtual interface, with their filter."""
    vip = site.svc.vip
    if site.mode != "farm" or vip is None or not addrs_of(vip, True):
        return None
    return FarmVip(
        vip, site.name, site.catalog.module_id(site.name), site.nodes.node,
        [site.nodes.node, *site.nodes.peers], site.paths.run / "bpf", site.log, site.resources,
        on_change=on_change, on_filter=on_filter,
    )


# -- replication

def replication(site: Site, heart: Heart | None, *, on_detached: Callable[[], None],
                on_progress: Callable[[], None], on_died: Callable[[str], None],
                ) -> tuple[Replication | None, str | None]:
    """A mirror's replicated directories, and the peer's address on the LAN the stream
    takes (the heartbeat with ident="flow", else the first); (None, None) without <rfs>."""
    svc, cluster, p = site.svc, site.nodes.cluster, site.paths
    if site.mode != "mirror" or svc.rfs is None or heart is None:
        return None, None
    assert cluster is not None
    flow = next((h.name for h in (svc.heart.heartbeats if svc.heart else ()) if h.ident == "flow"),
                heart.lans[0].name)
    peer_addr = cluster.addr(site.nodes.peers[0], flow)
    # Every mirror's stream is encrypted (TLS 1.3, node certificates) and authenticated
    # (the module key, both ways): docs/replication.md, "Security of the stream".
    ca, cert, key = credentials.credential_files(p)
    rfs = Replication(
        module=site.name, module_id=site.catalog.module_id(site.name), cfg=svc.rfs, paths=p, log=site.log,
        resources=site.resources, local_addr=cluster.addr(site.nodes.node, flow) or "",
        security=Security(site.catalog.key(site.name), (cert, key, ca)),
        on_detached=on_detached, on_progress=on_progress, on_died=on_died,
    )
    return rfs, peer_addr


def refuse_prim(intent: str | None, mode: str, datastate_path: Path) -> None:
    """`prim` on a mirror whose copy here may not be the reference (it was secondary, its
    synchronisation was cut short, it is outdated): refused; primforce is not."""
    if intent == "prim" and mode == "mirror":
        refusal = DataState.load(datastate_path).prim_refusal()
        if refusal:
            raise HakitError(f"prim refused: {refusal}")
