"""hakit -H NODES ...: act on several nodes at once, through their hakitd (RPC over TLS).

  hakit -H "node1,node2" CMD...   run `hakit CMD...` on each of those nodes
  hakit -H "*" -G                  apply this node's cluster.xml on every node
  hakit -H "node1,node2" -E AM     apply this node's module AM on those nodes, configured for them

NODES is "*" (every node of cluster.xml) or a comma-separated list of node names.  A node is
reached at its first address in cluster.xml that answers.  Nodes work in parallel; their
results are printed in cluster.xml order.  The exit code is 0 only when every node succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakit.config.cluster_model import Cluster
from hakit.config.loader import cluster_signature, load_cluster
from hakit.errors import HakitError, UsageError
from hakit.module.catalog import Catalog
from hakit.node import pki, trust
from hakit.node.remote_ops import CLI_TIMEOUT
from hakit.paths import Paths, paths
from hakit.runtime import credentials, rpc_client
from hakit.runtime.identity import local_node

CMD_TIMEOUT = CLI_TIMEOUT + 30.0  # the node gives up first and says so
APPLY_TIMEOUT = 60.0
USAGE = 'hakit -H "node1,node2" CMD... | hakit -H "*" -G | hakit -H "node1,node2" -E AM'
_SIGNATURE = re.compile(r"^signature\s+([0-9a-f]{64})\b", re.M)


def namespace(argv: list[str]) -> argparse.Namespace:
    """What main() runs for `hakit -H ARGV...` (parsed here: argparse cannot express it)."""
    changes = len(argv) > 1 and argv[1] in ("-G", "-E")
    return argparse.Namespace(func=lambda _args: run(argv), logged=changes)


def run(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        raise UsageError(f"-H needs the nodes first: {USAGE}")
    spec, rest = argv[0], argv[1:]
    if not rest:
        raise UsageError(f"-H {spec}: what should the nodes do? {USAGE}")
    if rest[0] == "-H":
        raise UsageError("-H may be given only once")
    p = paths()
    cluster = _installed_cluster(p)
    nodes = _select(cluster, spec)
    if rest[0] == "-G":
        if len(rest) != 1:
            raise UsageError("-G takes no argument: hakit -H \"*\" -G")
        return asyncio.run(_apply_cluster(p, cluster, nodes))
    if rest[0] == "-E":
        if len(rest) != 2:
            raise UsageError("-E takes one module name: hakit -H \"node1,node2\" -E AM")
        return asyncio.run(_export_module(p, cluster, nodes, rest[1]))
    return asyncio.run(_run_command(p, cluster, nodes, rest))


def _installed_cluster(p: Paths) -> Cluster:
    if not p.cluster_xml.exists():
        raise HakitError(f"no cluster configuration on this node ({p.cluster_xml} is missing): -H reaches "
                         "the nodes it names; install one with 'hakit cluster config FILE'")
    return load_cluster(p.cluster_xml)


def _select(cluster: Cluster, spec: str) -> list[str]:
    """The nodes `spec` names, in cluster.xml order."""
    if spec.strip() == "*":
        return list(cluster.node_names)
    asked = {n.strip() for n in spec.split(",") if n.strip()}
    unknown = sorted(asked - set(cluster.node_names))
    if not asked or unknown:
        raise UsageError(f"-H {spec!r}: {', '.join(unknown) or 'no node'} "
                         f"{'is' if len(unknown) == 1 else 'are'} not in cluster.xml "
                         f"(nodes: {', '.join(cluster.node_names)}; \"*\" names them all)")
    return [n for n in cluster.node_names if n in asked]


def _here(cluster: Cluster) -> str | None:
    try:
        return local_node(cluster)
    except HakitError:
        return None


# ---------------------------------------------------------------- one request per node


@dataclass
class Outcome:
    node: str
    addr: str | None = None  # where it answered
    result: Any = None
    error: str | None = None


async def _fan_out(p: Paths, cluster: Cluster, nodes: list[str],
                   work: Callable[[str, rpc_client.Connection], Awaitable[Any]]) -> list[Outcome]:
    ctx = rpc_client.client_context(p)

    async def one(node: str) -> Outcome:
        addrs = pki.node_addresses(cluster, node)
        try:
            conn = await rpc_client.connect(p, addrs, context=ctx, node=node)
        except rpc_client.Unreachable as exc:
            return Outcome(node, error=f"unreachable ({exc})")
        except HakitError as exc:
            return Outcome(node, error=str(exc))
        try:
            return Outcome(node, conn.addr, result=await work(node, conn))
        except HakitError as exc:
            return Outcome(node, conn.addr, error=str(exc))
        finally:
            conn.close()

    return list(await asyncio.gather(*(one(n) for n in nodes)))


def _out(line: str = "") -> None:
    print(line, flush=True)  # flushed: the nodes' stderr goes between these lines


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _where(o: Outcome) -> str:
    return f"{o.node} ({o.addr})" if o.addr else o.node


def _failed(failures: list[str]) -> int:
    if failures:
        _err(f"hakit: failed on {len(failures)} of the nodes: {', '.join(failures)}")
        return 1
    return 0


def _agreement(signatures: dict[str, str | None]) -> bool:
    """Print whether the nodes share one cluster configuration; True when they all do."""
    groups: dict[str, list[str]] = {}
    for node, sig in signatures.items():
        if sig:
            groups.setdefault(sig, []).append(node)
    unknown = [n for n, sig in signatures.items() if not sig]
    if len(groups) == 1 and not unknown:
        sig = next(iter(groups))
        _out(f"all {len(signatures)} nodes have cluster signature {sig[:16]}")
        return True
    if len(groups) > 1:
        _out("NODES DISAGREE on the cluster configuration:")
        for sig, members in groups.items():
            _out(f"  signature {sig[:16]}: {', '.join(members)}")
        _out('  apply one configuration everywhere: hakit -H "*" -G, on the node whose cluster.xml is right')
    else:
        for sig, members in groups.items():
            _out(f"cluster signature {sig[:16]} on {', '.join(members)}")
    if unknown:
        _out(f"  signature unknown on {', '.join(unknown)}")
    return False


# ---------------------------------------------------------------- hakit -H NODES CMD...


async def _run_command(p: Paths, cluster: Cluster, nodes: list[str], argv: list[str]) -> int:
    async def work(node: str, conn: rpc_client.Connection) -> Any:
        return await conn.call("cli", {"argv": argv}, CMD_TIMEOUT)

    outcomes = await _fan_out(p, cluster, nodes, work)
    failures = []
    for o in outcomes:
        _out(f"=== {_where(o)} ===")
        if o.error:
            _err(f"hakit: {o.node}: {o.error}")
            failures.append(o.node)
            continue
        sys.stdout.write(o.result["stdout"])
        sys.stdout.flush()
        sys.stderr.write(o.result["stderr"])
        sys.stderr.flush()
        if o.result["code"] != 0:
            failures.append(f"{o.node} (exit {o.result['code']})")
    agreed = True
    if argv == ["cluster", "confinfo"]:
        found = {o.node: _SIGNATURE.search(o.result["stdout"]) if o.result else None for o in outcomes}
        agreed = _agreement({node: m.group(1) if m else None for node, m in found.items()})
    return _failed(failures) or (0 if agreed else 1)


# ---------------------------------------------------------------- hakit -H NODES -G


async def _apply_cluster(p: Paths, cluster: Cluster, nodes: list[str]) -> int:
    data = p.cluster_xml.read_bytes()
    signature = cluster_signature(cluster)
    here = _here(cluster)
    ship = trust.shipped(p)  # the CA node's trust: its CA certificates, its retired list
    ca = pki.read_cas(p)[0] if ship is not None else None

    async def work(node: str, conn: rpc_client.Connection) -> Any:
        files = {"cluster.xml": data}
        if ship is not None:
            files |= {credentials.CA_CERT: ship.ca_pem, credentials.RETIRED: ship.retired}
        addrs = pki.node_addresses(cluster, node)
        reason = pki.renewal_reason(pki.load_cert_der(conn.peer_cert_der), node, addrs, ca)
        if reason and ca is not None:
            creds = pki.issue(p, node, addrs)
            files |= {credentials.NODE_KEY: creds.key_pem, credentials.NODE_CERT: creds.cert_pem}
        result = await conn.call("apply_cluster", {"files": files}, APPLY_TIMEOUT)
        return {**result, "reason": reason}

    outcomes = {o.node: o for o in await _fan_out(p, cluster, [n for n in nodes if n != here], work)}
    signatures: dict[str, str | None] = {}
    failures = []
    for node in nodes:
        if node == here:
            _out(f"{node}: this node, the source: signature {signature[:16]}")
            signatures[node] = signature
            continue
        o = outcomes[node]
        if o.error:
            _err(f"hakit: {node}: {o.error}")
            failures.append(node)
            signatures[node] = None
            continue
        r = o.result
        signatures[node] = r["signature"]
        was = "unchanged" if r["previous"] == r["signature"] else (
            f"was {r['previous'][:16]}" if r["previous"] else "new")
        _out(f"{_where(o)}: applied, signature {r['signature'][:16]} ({was})")
        if r["renewed"]:
            _out(f"  certificate renewed: {r['reason']}")
        elif r["reason"]:
            _out(f"  warning: its certificate should be renewed ({r['reason']}): run -G on the CA node")
        for note in r["notes"]:
            _out(f"  {note}")
    agreed = _agreement(signatures)
    return _failed(failures) or (0 if agreed else 1)


# ---------------------------------------------------------------- hakit -H NODES -E AM


async def _export_module(p: Paths, cluster: Cluster, nodes: list[str], module: str) -> int:
    catalog = Catalog(p)
    catalog.require(module)
    catalog.config(module)  # a configuration that does not read here is not shipped anywhere
    module_id = catalog.module_id(module)
    with tempfile.TemporaryDirectory(prefix="hakit-export-") as tmp:
        archive = Path(tmp) / f"{module}.safe"
        catalog.package(module, archive)
        args = {"module": module, "archive": archive.read_bytes(), "nodes": nodes, "id": module_id}
    here = _here(cluster)

    async def work(node: str, conn: rpc_client.Connection) -> Any:
        return await conn.call("apply_module", args, APPLY_TIMEOUT)

    outcomes = {o.node: o for o in await _fan_out(p, cluster, [n for n in nodes if n != here], work)}
    if here in nodes:
        catalog.set_nodes(module, nodes)
    failures = []
    ids = {}
    for node in nodes:
        if node == here:
            _out(f"{node}: this node, the source: module {module} (id {module_id}) on {', '.join(nodes)}")
            ids[node] = module_id
            continue
        o = outcomes[node]
        if o.error:
            _err(f"hakit: {node}: {o.error}")
            failures.append(node)
            continue
        r = o.result
        ids[node] = r["id"]
        done = f"replaced (previous one saved in {r['backup']})" if r["replaced"] else "installed"
        _out(f"{_where(o)}: module {module} {done}, id {r['id']}")
    odd = [n for n, i in ids.items() if i != module_id]
    if odd:
        # Ports derive from the id: nodes with different ids do not hear each other.
        _err(f"hakit: warning: module {module} has different ids: "
             + ", ".join(f"{n} {i}" for n, i in ids.items())
             + f"; to give it id {module_id} there, uninstall it on {', '.join(odd)} and run -E again")
    return _failed(failures)
