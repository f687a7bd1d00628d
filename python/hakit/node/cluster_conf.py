"""Installing a cluster.xml on this node: `hakit cluster config`, and `-G` from another node.

Light on purpose (configuration and paths only): the CLI imports it for every command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from hakit.config.cluster_model import Cluster
from hakit.config.loader import cluster_signature, cross_check, read_file
from hakit.config.module_model import ModuleConfig
from hakit.config.reader import Problem
from hakit.errors import HakitError
from hakit.paths import Paths


class ClusterConfigError(HakitError):
    """str() is the summary; `problems` are the file's problems, one per line, to show first."""

    def __init__(self, summary: str, problems: list[Problem] | None = None) -> None:
        super().__init__(summary)
        self.problems = problems or []

    def full(self) -> str:
        return "\n".join([*(str(p) for p in self.problems), str(self)])


@dataclasses.dataclass(frozen=True)
class ClusterInstalled:
    cluster: Cluster
    signature: str
    previous: str | None  # signature of the configuration it replaced
    warnings: list[Problem]  # obsolete but accepted, named after the file the user gave


def valid_cluster(path: Path, shown_as: str) -> tuple[Cluster | None, list[Problem]]:
    """The cluster read from `path`, or None and its problems (named after `shown_as`,
    the file the user knows)."""
    cluster, problems, _ = _read_cluster(path, shown_as)
    return cluster, problems


def _read_cluster(path: Path, shown_as: str) -> tuple[Cluster | None, list[Problem], list[Problem]]:
    """valid_cluster's answer, and the file's warnings."""
    loaded = read_file(path)
    if isinstance(loaded.model, ModuleConfig):
        # A module's own problems would only distract from the real mistake.
        return None, [Problem(shown_as, 1, "this is a module configuration (<safe>), not a cluster.xml")], []
    problems = [dataclasses.replace(p, file=shown_as) for p in loaded.problems]
    warnings = [dataclasses.replace(p, file=shown_as) for p in loaded.warnings]
    if isinstance(loaded.model, Cluster) and not problems:
        return loaded.model, [], warnings
    return None, problems, warnings


def installed_signature(p: Paths) -> str | None:
    cluster, _ = valid_cluster(p.cluster_xml, str(p.cluster_xml)) if p.cluster_xml.exists() else (None, [])
    return cluster_signature(cluster) if cluster else None


def install_cluster_xml(p: Paths, data: bytes, shown_as: str,
                        accept: Callable[[Cluster], None] | None = None) -> ClusterInstalled:
    """Validate `data` and, only when it has no problem, make it this node's cluster.xml in
    one rename (a reader sees the old file or the new one, never a mix).  accept, when
    given, may still refuse the valid cluster (by raising) before anything is replaced."""
    target = p.cluster_xml
    previous = installed_signature(p)
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
        cluster, problems, warnings = _read_cluster(tmp, shown_as)
        if cluster is None:
            raise ClusterConfigError(f"{shown_as} has problems: nothing installed, {target} is unchanged",
                                     problems)
        if accept is not None:
            accept(cluster)
        tmp.chmod(0o644)
        tmp.replace(target)
    except OSError as exc:
        raise ClusterConfigError(f"cannot install {target}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(target.parent)
    return ClusterInstalled(cluster, cluster_signature(cluster), previous, warnings)


def modules_against(p: Paths, cluster: Cluster) -> list[Problem]:
    """What installed modules ask of the cluster that the new configuration lacks: a LAN
    renamed or a node removed breaks them at their next start, so say it now."""
    problems: list[Problem] = []
    for conf in sorted(p.modules.glob("*/conf/userconfig.xml")):
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
