"""hakit module install|uninstall|list|listid|package|genkey."""

from __future__ import annotations

import argparse
from pathlib import Path

from hakit import ipc
from hakit.module.catalog import Catalog, ModuleError
from hakit.paths import paths


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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

    p = verbs.add_parser(
        "genkey",
        help="give the module its own heartbeat key (it travels with -E)",
        description="Write a new random key in the module's conf/key (mode 0600). Its heartbeats are then "
        "authenticated with it instead of a key derived from the cluster secret. Apply the module on its "
        'nodes afterwards (hakit -H "node1,node2" -E AM): nodes with different keys do not hear each other.',
    )
    p.add_argument("-m", dest="module", required=True, metavar="AM")
    p.set_defaults(func=_genkey, logged=True)


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


def _genkey(args: argparse.Namespace) -> int:
    p = paths()
    Catalog(p).genkey(args.module)
    print(f"new key for module {args.module} in {p.module_key(args.module)}; "
          f'apply it on the module\'s nodes: hakit -H "node1,node2" -E {args.module}')
    return 0
