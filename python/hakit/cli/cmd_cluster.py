"""hakit cluster confinfo|config: inspect and install the node's cluster.xml."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from hakit.config.cluster_model import Cluster
from hakit.config.loader import cluster_signature, cross_check, read_file
from hakit.config.module_model import ModuleConfig
from hakit.config.reader import Problem
from hakit.errors import HakitError
from hakit.paths import paths


class ClusterConfigError(HakitError):
    pass


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
        help="validate FILE and install it as this node's cluster.xml",
        description="Validate FILE and, only when it has no problem, replace this node's cluster.xml "
        "with it in one step (a reader sees the old file or the new one, never a mix).",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(func=_config, logged=True)


def _valid_cluster(path: Path, shown_as: Path) -> Cluster | None:
    """The cluster read from `path`, or None after printing every problem (named after
    `shown_as`, the file the user knows)."""
    loaded = read_file(path)
    if isinstance(loaded.model, ModuleConfig):
        # A module's own problems would only distract from the real mistake.
        problems = [Problem(str(shown_as), 1, "this is a module configuration (<safe>), not a cluster.xml")]
    else:
        problems = [dataclasses.replace(p, file=str(shown_as)) for p in loaded.problems]
    if isinstance(loaded.model, Cluster) and not problems:
        return loaded.model
    for problem in problems:
        print(problem, file=sys.stderr)
    return None


def _confinfo(args: argparse.Namespace) -> int:
    path: Path = args.file or paths().cluster_xml
    if args.file is None and not path.exists():
        raise ClusterConfigError(
            f"no cluster configuration on this node ({path} is missing); "
            "install one with 'hakit cluster config FILE'"
        )
    cluster = _valid_cluster(path, path)
    if cluster is None:
        raise ClusterConfigError(f"{path} is not a valid cluster.xml")
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
    source: Path = args.file
    target = paths().cluster_xml
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ClusterConfigError(f"{source}: cannot read: {exc.strerror}") from None
    previous = _installed_signature(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".cluster.xml.", dir=target.parent)
    except OSError as exc:
        raise ClusterConfigError(f"cannot write in {target.parent}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        # The copy is what gets validated, so what is installed is exactly what was checked.
        cluster = _valid_cluster(tmp, shown_as=source)
        if cluster is None:
            raise ClusterConfigError(f"{source} has problems: nothing installed, {target} is unchanged")
        tmp.chmod(0o644)
        tmp.replace(target)
    except OSError as exc:
        raise ClusterConfigError(f"cannot install {target}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(target.parent)

    signature = cluster_signature(cluster)
    change = "unchanged" if signature == previous else "new"
    print(f"cluster configuration installed in {target}")
    print(f"signature  {signature} ({change})")
    for problem in _modules_against(cluster):
        print(f"warning: {problem}", file=sys.stderr)
    return 0


def _installed_signature(target: Path) -> str | None:
    loaded = read_file(target) if target.exists() else None
    if loaded is None or loaded.problems or not isinstance(loaded.model, Cluster):
        return None
    return cluster_signature(loaded.model)


def _modules_against(cluster: Cluster) -> list[Problem]:
    """What installed modules ask of the cluster that the new configuration lacks: a LAN
    renamed or a node removed breaks them at their next start, so say it now."""
    problems: list[Problem] = []
    for conf in sorted(paths().modules.glob("*/conf/userconfig.xml")):
        loaded = read_file(conf)
        if isinstance(loaded.model, ModuleConfig) and not loaded.problems:
            problems.extend(cross_check(loaded, cluster))
    return problems


def _sync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry itself reaches the disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
