"""Reading and checking configuration files: the entry points the rest of hakit uses."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hakit.config.cluster_model import Cluster
from hakit.config.module_model import Macro, ModuleConfig, Safe, Service
from hakit.config.reader import Problem, Reader, closest, tag_parents
from hakit.config.xmltree import XmlSyntaxError, XNode, parse_file
from hakit.errors import HakitError

ROOTS = {"cluster": Cluster, "safe": Safe}


class ConfigInvalid(HakitError):
    """A configuration file has problems; str() lists them as FILE:LINE: message."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = list(problems)


@dataclass
class Loaded:
    """One file read: the model (None when unusable), its problems, element lines."""

    path: Path
    model: Cluster | ModuleConfig | None
    problems: list[Problem]
    lines: dict[int, int]
    warnings: list[Problem] = field(default_factory=list)  # obsolete but accepted


def read_file(path: Path) -> Loaded:
    name = str(path)
    try:
        top = parse_file(path)
    except XmlSyntaxError as exc:
        return Loaded(path, None, [Problem(name, exc.line, exc.message)], {})
    except OSError as exc:
        return Loaded(path, None, [Problem(name, 0, f"cannot read: {exc.strerror}")], {})

    roots = [n for n in top if n.tag in ROOTS]
    stray = [n for n in top if n.tag not in ROOTS and n.tag != "macro"]
    problems: list[Problem] = []
    for n in stray:
        problems.append(Problem(name, n.line, f"unknown top-level element <{n.tag}>{closest(n.tag, ROOTS)}"))
    if len(roots) != 1:
        line = roots[1].line if len(roots) > 1 else 1
        what = "more than one" if roots else "no"
        problems.append(Problem(name, line, f"{what} <cluster> or <safe> root element"))
        return Loaded(path, None, problems, {})
    root = roots[0]
    if root.tag == "cluster":
        for n in top:
            if n.tag == "macro":
                problems.append(Problem(name, n.line, "<macro> belongs in userconfig.xml, not cluster.xml"))
        reader = Reader(name)
        model: Cluster | ModuleConfig | None = reader.read(root, Cluster, tag_parents(Cluster))
    else:
        # Macros may stand before <safe> (as in SafeKit's own examples) or inside it.
        macro_nodes = [n for n in top if n.tag == "macro"] + [c for c in root.children if c.tag == "macro"]
        reader = Reader(name, _macro_values(macro_nodes))
        for n in (n for n in top if n.tag == "macro"):
            reader.read(n, Macro)
        safe = reader.read(root, Safe, tag_parents(Safe))
        model = ModuleConfig(safe.service, reader.macros) if safe is not None and safe.service else None
    problems.extend(reader.problems)
    problems.sort(key=lambda p: p.line)
    return Loaded(path, model, problems, reader.lines, reader.warnings)


def _macro_values(nodes: Iterable[XNode]) -> dict[str, str]:
    return {n.attrs["name"]: n.attrs.get("value", "") for n in nodes if "name" in n.attrs}


def load_cluster(path: Path) -> Cluster:
    loaded = read_file(path)
    if loaded.problems or not isinstance(loaded.model, Cluster):
        raise ConfigInvalid(loaded.problems or [Problem(str(path), 1, "not a cluster.xml (<cluster> root)")])
    return loaded.model


def load_module(path: Path, cluster: Cluster | None = None) -> ModuleConfig:
    loaded = read_file(path)
    problems = list(loaded.problems)
    if not problems and not isinstance(loaded.model, ModuleConfig):
        problems.append(Problem(str(path), 1, "not a userconfig.xml (<safe> root)"))
    if not problems and cluster is not None:
        problems.extend(cross_check(loaded, cluster))
    if problems:
        raise ConfigInvalid(problems)
    assert isinstance(loaded.model, ModuleConfig)
    return loaded.model


def cross_check(loaded: Loaded, cluster: Cluster) -> list[Problem]:
    """What a module configuration asks of cluster.xml that cluster.xml lacks."""
    assert isinstance(loaded.model, ModuleConfig)
    svc = loaded.model.service
    out: list[Problem] = []

    def add(obj: object, message: str) -> None:
        out.append(Problem(str(loaded.path), loaded.lines.get(id(obj), 1), message))

    lans = [lan.name for lan in cluster.lan_list]
    nodes = cluster.node_names
    for obj, lan in _lan_refs(svc):
        if lan not in lans:
            add(obj, f"LAN '{lan}' is not in cluster.xml{closest(lan, lans)}")
    if svc.vip and svc.vip.loadbalancing:
        for group in svc.vip.loadbalancing.groups:
            for host in group.cluster.hosts if group.cluster else ():
                if host.name not in nodes:
                    hint = closest(host.name, nodes)
                    add(host, f"<host name=\"{host.name}\"> is not a node of cluster.xml{hint}")
    if svc.defaultprim and svc.defaultprim not in nodes:
        hint = closest(svc.defaultprim, nodes)
        add(svc, f"defaultprim \"{svc.defaultprim}\" is not a node of cluster.xml{hint}")
    out.sort(key=lambda p: p.line)
    return out


def _lan_refs(svc: Service) -> Iterator[tuple[object, str]]:
    for hb in svc.heart.heartbeats if svc.heart else ():
        yield hb, hb.name
    for lan in svc.farm.lans if svc.farm else ():
        yield lan, lan.name


def check_files(paths: Sequence[Path], installed_cluster: Path | None = None) -> list[Problem]:
    """Problems of each file, and its warnings (Problem.warning); module files are also
    checked against a cluster.xml given on the same command line, else the installed one
    when it exists and is valid."""
    loaded = [read_file(p) for p in paths]
    problems = [p for item in loaded for p in sorted(item.problems + item.warnings, key=lambda p: p.line)]
    clusters = [item.model for item in loaded if isinstance(item.model, Cluster) and not item.problems]
    cluster = clusters[0] if clusters else None
    if cluster is None and installed_cluster is not None and installed_cluster.exists():
        installed = read_file(installed_cluster)
        if isinstance(installed.model, Cluster) and not installed.problems:
            cluster = installed.model
    if cluster is not None:
        for item in loaded:
            if isinstance(item.model, ModuleConfig) and not item.problems:
                problems.extend(cross_check(item, cluster))
    return problems


def cluster_signature(cluster: Cluster) -> str:
    """Stable digest of what nodes must agree on: LANs, node names and addresses.
    Element order and formatting do not change it."""
    canon = sorted(
        (lan.name, sorted((n.name, n.addr) for n in lan.nodes)) for lan in cluster.lan_list
    )
    return hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()
