"""hakit cluster confinfo|config|bundle|import|retire|rotate-ca: the node's cluster.xml and
cluster credentials."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hakit.config.cluster_model import Cluster
from hakit.config.loader import cluster_signature
from hakit.errors import HakitError
from hakit.node.cluster_conf import ClusterConfigError, install_cluster_xml, modules_against, valid_cluster
from hakit.paths import Paths, paths
from hakit.runtime import credentials

if TYPE_CHECKING:
    from cryptography import x509

    from hakit.runtime import rpc_client

# The credential commands import hakit.node.pki (and the cryptography package) only when run:
# every other command starts faster without them.


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = sub.add_parser("cluster", help="inspect or install the cluster configuration (cluster.xml)")
    verbs = cluster.add_subparsers(dest="cluster_verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser(
        "confinfo",
        help="signature, nodes and addresses of the cluster configuration",
        description="Print the signature of the installed cluster.xml (or of FILE), then every node "
        "with its address on each LAN. Nodes whose signatures differ do not share one configuration.",
    )
    p.add_argument("file", nargs="?", type=Path, metavar="FILE", help="a cluster.xml to inspect instead")
    p.set_defaults(func=_confinfo)

    p = verbs.add_parser(
        "config",
        help="validate FILE and install it as this node's cluster.xml; make missing credentials",
        description="Validate FILE and, only when it has no problem, replace this node's cluster.xml "
        "with it in one step (a reader sees the old file or the new one, never a mix). Without FILE, "
        "apply the installed cluster.xml again. On the first node, also create the cluster CA and the "
        "cluster secret; on a node holding the CA, create or renew its own certificate. "
        "Then 'hakit -H \"*\" -G' applies the configuration on every node.",
    )
    p.add_argument("file", nargs="?", type=Path, metavar="FILE")
    p.set_defaults(func=_config, logged=True)

    p = verbs.add_parser(
        "bundle",
        help="on the CA node: write the credentials a new node needs to join (secret: 0600)",
        description="Issue a key and certificate for NODE and write them, with the CA certificate and "
        "the cluster secret, to OUT (mode 0600). Copy OUT to NODE by hand and run "
        "'hakit cluster import OUT' there: this first copy is how the nodes come to trust each other.",
    )
    p.add_argument("node", metavar="NODE", help="a node of cluster.xml")
    p.add_argument("-o", dest="out", type=Path, required=True, metavar="OUT")
    p.set_defaults(func=_bundle, logged=True)

    p = verbs.add_parser(
        "import",
        help="install a bundle made by 'hakit cluster bundle' on the CA node",
        description="Check FILE (certificates signed by its CA, key matching, secret) and install it in "
        "this node's credentials directory. Credentials of another CA found there are moved aside.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(func=_import, logged=True)

    p = verbs.add_parser(
        "retire",
        help="on the CA node: no node accepts NODE's certificates any more (then -G)",
        description="Retire every certificate this CA node issued to NODE (a node lost, stolen or "
        "reinstalled): once 'hakit -H \"*\" -G' has shipped the retired list, no node serves or "
        "calls a holder of them. NODE comes back only with a new bundle ('hakit cluster bundle').",
    )
    p.add_argument("node", metavar="NODE")
    p.set_defaults(func=_retire, logged=True)

    p = verbs.add_parser(
        "rotate-ca",
        help="on the CA node: replace the cluster CA, in two steps with -G after each",
        description="Make a new cluster CA, trusted beside the current one, and a certificate of it "
        "for this node; then 'hakit -H \"*\" -G' gives every node the new trust and a new "
        "certificate. With --finish, once every node shows a certificate of the new CA, trust the "
        "new CA only; 'hakit -H \"*\" -G' again ships that. The cluster secret does not change.",
    )
    p.add_argument("--finish", action="store_true", help="end the rotation: trust the new CA only")
    p.set_defaults(func=_rotate_ca, logged=True)


def _valid_cluster(path: Path) -> Cluster | None:
    """The cluster read from `path`, or None after printing every problem."""
    cluster, problems = valid_cluster(path, str(path))
    for problem in problems:
        print(problem, file=sys.stderr)
    return cluster


def _confinfo(args: argparse.Namespace) -> int:
    path: Path = args.file or paths().cluster_xml
    cluster = _read_cluster(path, installed=args.file is None)
    print(f"file       {path}")
    print(f"signature  {cluster_signature(cluster)}")
    print()
    for row in _table(cluster):
        print(row.rstrip())
    return 0


def _table(cluster: Cluster) -> list[str]:
    """One row per node, one column per LAN; '-' where a node is not on a LAN."""
    lans = [lan.name for lan in cluster.lan_list]
    rows = [["node", *lans]]
    for node in cluster.node_names:
        rows.append([node, *(cluster.addr(node, lan) or "-" for lan in lans)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]


def _config(args: argparse.Namespace) -> int:
    p = paths()
    source: Path = args.file or p.cluster_xml
    if args.file is None:
        _require_installed(p)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ClusterConfigError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        done = install_cluster_xml(p, data, str(source))
    except ClusterConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise ClusterConfigError(str(exc)) from None
    change = "unchanged" if done.signature == done.previous else "new"
    print(f"cluster configuration installed in {p.cluster_xml}")
    print(f"signature  {done.signature} ({change})")
    for warning in done.warnings:
        print(warning, file=sys.stderr)
    for problem in modules_against(p, done.cluster):
        print(f"warning: {problem}", file=sys.stderr)

    from hakit.node import pki

    for line in pki.setup_local(p, done.cluster):
        print(f"credentials  {line}")
    _reload_daemon(p)
    return 0


def _reload_daemon(p: Paths) -> None:
    """hakitd listens for other nodes with the credentials and addresses it read at start:
    have it read them again (it may well not be running yet)."""
    if not p.daemon_socket.exists():
        return
    from hakit import ipc

    with contextlib.suppress(HakitError):
        ipc.call(p.daemon_socket, "rpc_reload", timeout=10.0)


def _require_installed(p: Paths) -> None:
    if not p.cluster_xml.exists():
        raise ClusterConfigError(f"no cluster configuration on this node ({p.cluster_xml} is missing); "
                                 "install one with 'hakit cluster config FILE'")


def _read_cluster(path: Path, installed: bool) -> Cluster:
    """The cluster of `path` (the installed cluster.xml when `installed`), or the reason why not."""
    if installed:
        _require_installed(paths())
    cluster = _valid_cluster(path)
    if cluster is None:
        raise ClusterConfigError(f"{path} is not a valid cluster.xml")
    return cluster


def _bundle(args: argparse.Namespace) -> int:
    from hakit.node import pki

    p = paths()
    data = pki.make_bundle(p, _read_cluster(p.cluster_xml, installed=True), args.node)
    out: Path = args.out
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
    except OSError as exc:
        raise ClusterConfigError(f"cannot write {out}: {exc.strerror}") from None
    print(f"credentials of {args.node} written to {out} (secret: copy it to {args.node} only, "
          f"run 'hakit cluster import {out.name}' there, then delete it)")
    return 0


def _import(args: argparse.Namespace) -> int:
    from hakit.node import pki

    p = paths()
    source: Path = args.file
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ClusterConfigError(f"{source}: cannot read: {exc.strerror}") from None
    bundle = pki.read_bundle(data, str(source))
    if p.cluster_xml.exists():
        _check_bundle_node(p, bundle.node)
    aside = pki.install_bundle(p, bundle)
    if aside:
        print(f"credentials of another cluster CA moved to {aside}")
    print(f"credentials of {bundle.node} installed in {p.pki} ({pki.describe(p)})")
    _reload_daemon(p)
    return 0


def _check_bundle_node(p: Paths, node: str) -> None:
    """A bundle imported on the wrong machine would have it pose as another node."""
    from hakit.runtime.identity import local_node

    cluster, _ = valid_cluster(p.cluster_xml, str(p.cluster_xml))
    if cluster is None:
        return
    try:
        here = local_node(cluster)
    except HakitError:
        return
    if here != node:
        raise ClusterConfigError(f"this bundle is for {node}, and this machine is {here} in cluster.xml: "
                                 f"make one for {here} on the CA node (hakit cluster bundle {here} -o FILE)")


def _retire(args: argparse.Namespace) -> int:
    from hakit.node import trust

    new = trust.retire(paths(), args.node)
    for cert in new:
        print(f"retired certificate {cert[:32]} of {args.node}")
    if not new:
        print(f"every certificate issued to {args.node} was already retired")
    print("now run 'hakit -H \"*\" -G': the nodes refuse them once they have the list")
    return 0


def _rotate_ca(args: argparse.Namespace) -> int:
    from hakit.node import pki, trust
    from hakit.runtime.identity import local_node

    p = paths()
    cluster = _read_cluster(p.cluster_xml, installed=True)
    if args.finish:
        if lagging := _lagging(p, cluster, pki.read_cas(p)[0]):
            raise credentials.PkiError("not every node has a certificate of the new CA yet: "
                               + "; ".join(lagging) + "; run 'hakit -H \"*\" -G' first")
        ca = trust.finish_rotation(p, cluster, local_node(cluster))
        print(f"the cluster CA is now {pki.fingerprint(ca)} alone")
        print("now run 'hakit -H \"*\" -G': the nodes stop trusting the previous CA once they have it")
    else:
        new, old = trust.rotate_ca(p)
        print(f"new cluster CA {pki.fingerprint(new)}, trusted beside {pki.fingerprint(old)} for now")
        print("now run 'hakit -H \"*\" -G' (new certificates for every node), "
              "then 'hakit cluster rotate-ca --finish'")
    _reload_daemon(p)
    return 0


def _lagging(p: Paths, cluster: Cluster, ca: x509.Certificate) -> list[str]:
    """The other nodes that do not show a certificate of `ca`, each with why."""
    import asyncio

    from hakit.cli.cmd_remote import _fan_out, _here
    from hakit.node import pki

    async def cert_of(node: str, conn: rpc_client.Connection) -> bytes:
        return conn.peer_cert_der

    others = [n for n in cluster.node_names if n != _here(cluster)]
    lagging = []
    for o in asyncio.run(_fan_out(p, cluster, others, cert_of)):
        if o.error:
            lagging.append(f"{o.node}: {o.error}")
        elif not pki.signed_by(pki.load_cert_der(o.result), ca):
            lagging.append(f"{o.node}: its certificate is of the previous CA")
    return lagging
