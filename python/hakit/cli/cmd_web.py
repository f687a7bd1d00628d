"""`hakit web user|token ...`: the users of the console and API (docs/web.md).  A change is
made on this node and shipped to every other node that answers."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from hakit.errors import UsageError
from hakit.node.web.peers import Peers
from hakit.node.web.server import ship_users
from hakit.node.web.users import ROLES, Users
from hakit.paths import paths


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    web = sub.add_parser("web", help="users of the web console and API")
    nouns = web.add_subparsers(dest="web_noun", metavar="WHAT", parser_class=type(web))
    nouns.required = True

    user = nouns.add_parser("user", help="local users and their roles (admin, control, monitor)")
    verbs = user.add_subparsers(dest="web_verb", metavar="VERB", parser_class=type(web))
    verbs.required = True
    p = verbs.add_parser("add", help="add a user (asks for the password)")
    p.add_argument("name")
    p.add_argument("-r", "--role", required=True, choices=ROLES)
    _password_args(p)
    p.set_defaults(func=_add, logged=True)
    p = verbs.add_parser("passwd", help="change a user's password")
    p.add_argument("name")
    _password_args(p)
    p.set_defaults(func=_passwd, logged=True)
    p = verbs.add_parser("role", help="change a user's role")
    p.add_argument("name")
    p.add_argument("role", choices=ROLES)
    p.set_defaults(func=_role, logged=True)
    p = verbs.add_parser("del", help="delete a user")
    p.add_argument("name")
    p.set_defaults(func=_delete, logged=True)
    p = verbs.add_parser("list", help="users, roles and tokens")
    p.set_defaults(func=_list)

    token = nouns.add_parser("token", help="tokens for scripts (Authorization: Bearer TOKEN)")
    verbs = token.add_subparsers(dest="web_verb", metavar="VERB", parser_class=type(web))
    verbs.required = True
    p = verbs.add_parser("add", help="a new token for a user, printed once")
    p.add_argument("user")
    p.add_argument("name", help="a name to tell the token by")
    p.add_argument("--days", type=int, metavar="N", help="valid N days (default: until deleted)")
    p.set_defaults(func=_token_add, logged=True)
    p = verbs.add_parser("del", help="delete a user's token")
    p.add_argument("user")
    p.add_argument("name")
    p.set_defaults(func=_token_del, logged=True)


def _password_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin (scripts), instead of asking")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask the password on: use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise UsageError("the two passwords differ")
    return first


def _save(users: Users) -> int:
    users.save()
    for node, said in sorted(asyncio.run(_ship(users.dump())).items()):
        print(f"{node}: {'users updated' if said == 'ok' else 'not updated: ' + said}",
              file=sys.stdout if said == "ok" else sys.stderr)
    return 0


async def _ship(data: bytes) -> dict[str, str]:
    peers = Peers(paths())
    try:
        return await ship_users(peers, data, lambda _m: None)
    finally:
        peers.close()


def _users() -> Users:
    return Users(paths().web_users)


def _add(args: argparse.Namespace) -> int:
    users = _users()
    users.add(args.name, args.role, _password(args))
    return _save(users)


def _passwd(args: argparse.Namespace) -> int:
    users = _users()
    users.get(args.name)
    users.set_password(args.name, _password(args))
    return _save(users)


def _role(args: argparse.Namespace) -> int:
    users = _users()
    users.set_role(args.name, args.role)
    return _save(users)


def _delete(args: argparse.Namespace) -> int:
    users = _users()
    users.delete(args.name)
    return _save(users)


def _list(args: argparse.Namespace) -> int:
    for u in _users().listing():
        tokens = ", ".join(t["name"] for t in u["tokens"]) or "-"
        password = "yes" if u["password"] else "no"
        print(f"{u['name']:<20} {u['role']:<8} password: {password:<3}  tokens: {tokens}")
    return 0


def _token_add(args: argparse.Namespace) -> int:
    users = _users()
    token = users.new_token(args.user, args.name, args.days * 86400.0 if args.days else None)
    _save(users)
    print(token)
    return 0


def _token_del(args: argparse.Namespace) -> int:
    users = _users()
    users.drop_token(args.user, args.name)
    return _save(users)
