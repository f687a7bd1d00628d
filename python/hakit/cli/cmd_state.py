"""Reading a module's state and logs, the commands log, and writing to the module log.

These read the stores directly, so they work whether or not hakitd runs.
"""

from __future__ import annotations

import argparse
import os
import time

from hakit import __version__
from hakit.errors import UsageError
from hakit.module.catalog import Catalog
from hakit.paths import paths
from hakit.rfs.progress import sync_line
from hakit.runtime.log import ModuleLog
from hakit.store.module_store import MAIN_LEVELS, Level, ModuleStore
from hakit.store.node_store import NodeStore


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def _module_arg(p: argparse.ArgumentParser, env_default: bool = False, required: bool = True,
                help_text: str = "module name") -> None:
    if env_default:
        help_text += " (default: $SAFEMODULE, set for module scripts)"
    p.add_argument("-m", dest="module", metavar="AM", required=required and not env_default, help=help_text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("state", help="state of every module on this node, or of one (-m)")
    _module_arg(p, required=False, help_text="only this module, with -v its resources")
    p.add_argument("-v", dest="verbose", action="store_true", help="all resources with their dates")
    p.set_defaults(func=_state)

    p = sub.add_parser("logview", help="module log (U/E/C/S lines; -I adds I, -A adds everything)")
    _module_arg(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("-I", dest="info", action="store_true", help="also information lines")
    g.add_argument("-A", dest="all", action="store_true", help="every line, debug included")
    p.add_argument("-n", dest="lines", type=int, metavar="N", help="only the last N lines")
    p.set_defaults(func=_logview)

    p = sub.add_parser("history", help="values a resource of a module took over time")
    _module_arg(p)
    p.add_argument("-r", dest="resource", required=True, metavar="RESOURCE")
    p.set_defaults(func=_history)

    p = sub.add_parser("cmdlog", help="commands run on this node")
    p.add_argument("-n", dest="lines", type=int, default=200, metavar="N")
    p.set_defaults(func=_cmdlog)

    p = sub.add_parser("level", help="hakit version")
    p.set_defaults(func=_level)

    for verb, level in (("printi", Level.INFO), ("printe", Level.EVENT)):
        p = sub.add_parser(verb, help=f"write a message in the module log at level {level}")
        _module_arg(p, env_default=True)
        p.add_argument("message", nargs="+")
        p.set_defaults(func=_print, level=level)


def _open_store(module: str) -> ModuleStore:
    p = paths()
    Catalog(p).require(module)
    return ModuleStore(p.module_db(module))


def _state(args: argparse.Namespace) -> int:
    if args.module is None:
        return _every_state(args)
    store = _open_store(args.module)
    print(_state_line(args.module, store))
    if args.verbose:
        resources = store.resources()
        if line := sync_line({r.name: r.value for r in resources}):
            print(f"  {line}")
        for r in resources:
            print(f"  {r.name:<32} {r.value:<16} {_stamp(r.updated)}")
    return 0


def _state_line(module: str, store: ModuleStore) -> str:
    state = store.resource("module.state")
    status = store.resource("module.status")
    if state is None:
        return f"{module}: STOP (NotReady)  never started on this node"
    return f"{module}: {state.value} ({status.value if status else '?'})  since {_stamp(state.since)}"


def _every_state(args: argparse.Namespace) -> int:
    """Every module installed here, one line each, as `-m` prints its first (SafeKit's
    `safekit state` without -m)."""
    if args.verbose:
        raise UsageError("state: -v needs -m AM (the resources of one module)")
    p = paths()
    names = Catalog(p).names()
    if not names:
        print("no module installed on this node")
    for name in names:
        with ModuleStore(p.module_db(name)) as store:
            print(_state_line(name, store))
    return 0


def _logview(args: argparse.Namespace) -> int:
    levels: set[Level] | None = set(MAIN_LEVELS)
    if args.info:
        levels = {*MAIN_LEVELS, Level.INFO}
    elif args.all:
        levels = None
    for line in _open_store(args.module).logs(levels, args.lines):
        print(f"{_stamp(line.at)} | {line.source:<8} | {line.level} | {line.message}")
    return 0


def _history(args: argparse.Namespace) -> int:
    for at, value in _open_store(args.module).history(args.resource):
        print(f"{_stamp(at)}  {value}")
    return 0


def _cmdlog(args: argparse.Namespace) -> int:
    for c in NodeStore(paths().node_db).commands(args.lines):
        result = "running" if c.result is None else f"exit {c.result}"
        duration = "" if c.duration is None else f" {c.duration:.1f}s"
        print(f"{_stamp(c.at)} | {c.user:<10} | {c.origin:<6} | {result}{duration} | {c.command}")
    return 0


def _level(args: argparse.Namespace) -> int:
    print(f"hakit {__version__}")
    return 0


def _print(args: argparse.Namespace) -> int:
    module = args.module or os.environ.get("SAFEMODULE")
    if not module:
        raise UsageError(f"{args.verb}: give -m AM (outside module scripts SAFEMODULE is not set)")
    store = _open_store(module)
    ModuleLog(module, store)(args.level, "script", " ".join(args.message))
    return 0
