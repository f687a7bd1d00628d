"""Which node of cluster.xml this machine is."""

from __future__ import annotations

import os
import socket

from hakit.config.cluster_model import Cluster
from hakit.errors import HakitError

NODE_ENV = "HAKIT_NODE"


def local_addresses() -> set[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr()} - {None}


def _resolve(addr: str) -> str | None:
    try:
        return socket.gethostbyname(addr)
    except OSError:
        return None


def local_node(cluster: Cluster) -> str:
    """The node whose address on some LAN is configured here (HAKIT_NODE overrides)."""
    forced = os.environ.get(NODE_ENV)
    if forced:
        if forced not in cluster.node_names:
            raise HakitError(f"{NODE_ENV}={forced} is not a node of cluster.xml")
        return forced
    mine = local_addresses()
    for lan in cluster.lan_list:
        for node in lan.nodes:
            if _resolve(node.addr) in mine:
                return node.name
    host = socket.gethostname()
    if host in cluster.node_names:
        return host
    raise HakitError(
        "this machine is not a node of cluster.xml: none of its addresses "
        f"({', '.join(sorted(mine)) or 'none'}) nor its host name {host} appears there"
    )
