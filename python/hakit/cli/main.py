"""The `hakit` command: one verb per subcommand module, SafeKit's verbs kept."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hakit import __version__
from hakit.errors import HakitError

# Each module defines register(subparsers); its handlers return the exit code.
COMMAND_MODULES = (
    "hakit.cli.cmd_config",
    "hakit.cli.cmd_cluster",
    "hakit.cli.cmd_module",
    "hakit.cli.cmd_state",
    "hakit.cli.cmd_control",
    "hakit.cli.cmd_sim",
    "hakit.cli.cmd_demo",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as hakit does every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"hakit: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hakit", description="hakit high-availability toolkit")
    parser.add_argument("--version", action="version", version=f"hakit {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HakitError as exc:
        print(f"hakit: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
