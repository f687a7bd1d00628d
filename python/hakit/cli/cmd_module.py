"""hakit module install|uninstall|list|listid|package."""

from __future__ import annotations

import argparse
from pathlib import Path

from hakit import ipc
from hakit.module.catalog import Catalog, ModuleError
from hakit.paths import paths


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    mod = sub.add_parser("module", help="install, remove and list application modules")
    verbs = mod.add_subparsers(dest="module_verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("install", help="install a module from a .safe archive or a shipped template")
    p.add_argument("-m", dest="module", required=True, metavar="AM", help="name to install it under")
    p.add_argument("-M", dest="module_id", type=int, metavar="ID", help="module id (default: first free)")
    p.add_argument("archive", metavar="FILE", help="path of a .safe, or a template name (mirror.safe…)")
    p.set_defaults(func=_install, logged=True)

    p = verbs.add_parser("uninstall", help="remove a module (a backup .safe is kept)")
    p.add_argument("-m", dest="module", required=True, metavar="AM")
    p.set_defaults(func=_uninstall, logged=True)

    p = verbs.add_parser("list", help="installed modules")
    p.set_defaults(func=_list)

    p = verbs.add_parser("listid", help="installed modules with their ids")
    p.set_defaults(func=_listid)

    p = verbs.add_parser("package", help="write an installed module as a .safe archive")
    p.add_argument("-m", dest="module", required=True, metavar="AM")
    p.add_argument("out", metavar="OUT", help="archive to write")
    p.set_defaults(func=_package)


def _install(args: argparse.Namespace) -> int:
    done = Catalog(paths()).install(args.archive, args.module, args.module_id)
    print(f"module {done.name} installed (id {done.id}, mode {done.mode})")
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    p = paths()
    # Its scripts and state are about to go: a running module must be stopped first.
    if ipc.answering(p.module_socket(args.module)):
        raise ModuleError(f"module {args.module} is running; stop it first (hakit stop -m {args.module})")
    backup = Catalog(p).uninstall(args.module)
    print(f"module {args.module} uninstalled; backup in {backup}")
    return 0


def _list(args: argparse.Namespace) -> int:
    for m in Catalog(paths()).listing():
        print(f"{m.name}\t{m.mode or '(configuration unreadable)'}")
    return 0


def _listid(args: argparse.Namespace) -> int:
    for m in Catalog(paths()).listing():
        print(f"{m.name}\t{m.id}")
    return 0


def _package(args: argparse.Namespace) -> int:
    Catalog(paths()).package(args.module, Path(args.out))
    print(f"module {args.module} written to {args.out}")
    return 0
