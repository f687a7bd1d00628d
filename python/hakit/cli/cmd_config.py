"""hakit config check|doc: validate configuration files, print the configuration reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hakit.config.loader import check_files
from hakit.paths import paths


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="check configuration files, print the configuration reference")
    verbs = config.add_subparsers(dest="config_verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser(
        "check",
        help="validate cluster.xml and userconfig.xml files",
        description="Validate each FILE (cluster.xml or userconfig.xml). Module files are also checked "
        "against a cluster.xml given on the same command line, else against the installed one. "
        "Problems go to stderr as FILE:LINE: message; the exit code is 1 when there is any.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.set_defaults(func=_check)

    p = verbs.add_parser("doc", help="print the configuration reference (Markdown)")
    p.set_defaults(func=_doc)


def _check(args: argparse.Namespace) -> int:
    problems = check_files(args.files, installed_cluster=paths().cluster_xml)
    for problem in problems:
        print(problem, file=sys.stderr)
    failed = {problem.file for problem in problems if not problem.warning}
    for path in args.files:
        if str(path) not in failed:
            print(f"{path}: ok")
    return 1 if failed else 0


def _doc(args: argparse.Namespace) -> int:
    from hakit.config import docgen  # (only this command needs the reference's generator)

    sys.stdout.write(docgen.generate())
    return 0
