"""The `hakit` command: one verb per subcommand module, SafeKit's verbs kept."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sqlite3
import sys
from collections.abc import Sequence

from hakit import __version__
from hakit.config.cluster_model import CmdLog
from hakit.config.loader import load_cluster
from hakit.errors import HakitError
from hakit.ipc import ORIGIN_ENV, caller
from hakit.paths import Paths, paths
from hakit.store.node_store import NodeStore
from hakit.store.retention import Retention

# Each module defines register(subparsers); its handlers return the exit code.
COMMAND_MODULES = (
    "hakit.cli.cmd_config",
    "hakit.cli.cmd_cluster",
    "hakit.cli.cmd_module",
    "hakit.cli.cmd_state",
    "hakit.cli.cmd_control",
    "hakit.cli.cmd_rfs",
    "hakit.cli.cmd_checks",
    "hakit.cli.cmd_sim",
    "hakit.cli.cmd_demo",
    "hakit.cli.cmd_web",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as hakit does every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"hakit: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hakit", description="hakit high-availability toolkit",
        epilog='On other nodes: hakit -H "node1,node2"|"*" VERB ...; hakit -H "*" -G (apply the cluster '
               'configuration); hakit -H "node1,node2" -E AM (apply a module configuration).',
    )
    parser.add_argument("--version", action="version", version=f"hakit {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except HakitError as exc:
        print(f"hakit: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except sqlite3.Error as exc:
        print(f"hakit: state store error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("HAKIT_DEBUG"):
            raise
        print(f"hakit: internal error: {type(exc).__name__}: {exc} (HAKIT_DEBUG=1 shows the details)",
              file=sys.stderr)
        return 70


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["-H"]:
        # `hakit -H NODES CMD...` passes CMD on untouched: parsed before argparse sees it.
        from hakit.cli import cmd_remote

        args = cmd_remote.namespace(argv[1:])
    else:
        args = build_parser().parse_args(argv)
    if not getattr(args, "logged", False):
        return _run(args)
    # Commands that change something go to the node's commands log, with their result.
    # Best effort: no command should fail for want of a log.
    log: NodeStore | None = None
    try:
        store = NodeStore(paths().node_db, _cmdlog_retention(paths()))
        origin = os.environ.get(ORIGIN_ENV) or "cli"
        entry = store.command_started(caller(), origin, shlex.join(["hakit", *argv]))
        log = store
    except (OSError, sqlite3.Error):
        pass
    code = _run(args)
    if log is not None:
        log.command_ended(entry, code)
        log.close()
    return code


def _cmdlog_retention(p: Paths) -> Retention:
    """cluster.xml's <cmdlog>; its defaults without a usable cluster.xml (which the
    commands that need it report)."""
    kept = CmdLog()
    if p.cluster_xml.exists():
        with contextlib.suppress(HakitError):
            kept = load_cluster(p.cluster_xml).cmdlog or kept
    return Retention(kept.age, kept.size)


if __name__ == "__main__":
    sys.exit(main())
