"""What a node tells about itself to the web service: its modules and their states, resources,
history, log, synchronisation progress, configuration, commands log.  Read from the stores, so
a node answers whether or not its modules run.  The node the console talks to asks the others
for theirs over RPC (op "web_read"), which serves these same functions."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from hakit import __version__
from hakit.config.loader import load_cluster
from hakit.errors import HakitError
from hakit.module.catalog import Catalog
from hakit.paths import Paths
from hakit.rfs import progress
from hakit.runtime.identity import local_node
from hakit.store.module_store import MAIN_LEVELS, Level, ModuleStore
from hakit.store.node_store import NodeStore

LEVELS: dict[str, frozenset[Level] | None] = {
    "main": MAIN_LEVELS, "info": MAIN_LEVELS | {Level.INFO}, "all": None}
MAX_LINES = 5000


def node_name(p: Paths) -> str:
    try:
        return local_node(load_cluster(p.cluster_xml))
    except HakitError:
        return os.environ.get("HAKIT_NODE") or socket.gethostname()


def _cluster_nodes(p: Paths) -> list[str]:
    try:
        return load_cluster(p.cluster_xml).node_names
    except HakitError:
        return []


def summary(p: Paths, _args: dict[str, Any]) -> dict[str, Any]:
    """This node and the state of each of its modules."""
    catalog = Catalog(p)
    cluster_nodes = _cluster_nodes(p)
    modules: dict[str, Any] = {}
    for name in catalog.names():
        entry: dict[str, Any] = {"mode": None, "id": None, "nodes": [], "state": "STOP",
                                 "status": "NotReady", "since": None, "error": None}
        try:
            entry["id"] = catalog.module_id(name)
            entry["nodes"] = catalog.nodes(name, cluster_nodes)
            entry["mode"] = catalog.config(name).service.mode
        except HakitError as exc:
            entry["error"] = str(exc).splitlines()[0]
        if p.module_db(name).exists():
            with ModuleStore(p.module_db(name)) as store:
                state, status = store.resource("module.state"), store.resource("module.status")
            if state is not None and status is not None:
                entry.update(state=state.value, status=status.value, since=state.since)
        modules[name] = entry
    return {"node": node_name(p), "version": __version__, "modules": modules}


def _store(p: Paths, args: dict[str, Any]) -> ModuleStore:
    name = str(args.get("module", ""))
    Catalog(p).require(name)
    return ModuleStore(p.module_db(name))


def resources(p: Paths, args: dict[str, Any]) -> list[dict[str, Any]]:
    with _store(p, args) as store:
        return [{"name": r.name, "value": r.value, "since": r.since, "updated": r.updated}
                for r in store.resources(str(args.get("prefix", "")))]


def history(p: Paths, args: dict[str, Any]) -> list[dict[str, Any]]:
    with _store(p, args) as store:
        return [{"at": at, "value": value}
                for at, value in store.history(str(args.get("resource", "")), int(args.get("limit", 100)))]


def log(p: Paths, args: dict[str, Any]) -> list[dict[str, Any]]:
    level = str(args.get("level", "main"))
    if level not in LEVELS:
        raise HakitError(f"level must be one of {', '.join(LEVELS)}")
    limit = min(int(args.get("limit", 200)), MAX_LINES)
    with _store(p, args) as store:
        lines = store.logs(LEVELS[level], limit, after=int(args.get("after", 0)))
    return [{"id": ln.id, "at": ln.at, "source": ln.source, "level": str(ln.level), "message": ln.message}
            for ln in lines]


def sync(p: Paths, args: dict[str, Any]) -> dict[str, Any]:
    """A mirror's synchronisation: what `hakit state -v` prints, as numbers."""
    with _store(p, args) as store:
        return sync_progress({r.name: r.value for r in store.resources("rfs.")})


def sync_progress(values: Mapping[str, str]) -> dict[str, Any]:
    """The synchronisation's progress from the rfs.* resources (the sync read and /metrics)."""
    p = progress.sync_progress(values)
    return {"active": p.active, "kind": values.get("rfs.sync_mode") or None,
            "state": values.get("rfs.sync_state"),
            "done_bytes": p.done, "total_bytes": p.total, "files": p.files,
            "rate_bps": p.rate, "eta_s": (p.total - p.done) / p.rate if p.rate > 0 else None,
            "line": progress.sync_line(values)}


def config(p: Paths, args: dict[str, Any]) -> dict[str, Any]:
    name = str(args.get("module", ""))
    Catalog(p).require(name)
    try:
        nodes = Catalog(p).nodes(name, _cluster_nodes(p))
    except HakitError:
        nodes = []  # (as the overview says: its error is shown there)
    return {"userconfig": p.module_conf(name).read_text(errors="replace"), "nodes": nodes}


def commands(p: Paths, args: dict[str, Any]) -> list[dict[str, Any]]:
    limit = min(int(args.get("limit", 200)), MAX_LINES)
    store = NodeStore(p.node_db)
    try:
        return [{"id": c.id, "at": c.at, "user": c.user, "origin": c.origin, "command": c.command,
                 "result": c.result, "duration": c.duration} for c in store.commands(limit)]
    finally:
        store.close()


READS: dict[str, Callable[[Paths, dict[str, Any]], Any]] = {
    "summary": summary, "resources": resources, "history": history, "log": log, "sync": sync,
    "config": config, "commands": commands,
}


def read(p: Paths, args: dict[str, Any]) -> Any:
    what = str(args.get("what", ""))
    if what not in READS:
        raise HakitError(f"web_read: unknown read '{what}'")
    return READS[what](p, args)
