"""Controlling modules through hakitd (start, stop, boot, shutdown) and the systemd
services of module scripts (hakit services ...)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from hakit import ipc
from hakit.errors import HakitError, UsageError
from hakit.paths import paths


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, text in (("start", "start a module on this node"), ("stop", "stop a module on this node")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("-m", dest="module", required=True, metavar="AM")
        p.add_argument("-i", dest="origin", metavar="WHO", help="who asks (a script's name), for the log")
        if verb == "stop":
            p.add_argument("--force", action="store_true", help="pass 'force' to the stop scripts")
        p.set_defaults(func=_control, logged=True)

    for verb, text in (
        ("prim", "make this node the primary of a mirror module (its data is the reference)"),
        ("primforce", "prim, even when this node's data may not be the newest"),
        ("second", "make this node the secondary of a mirror module ('second fullsync': synchronised fully)"),
        ("swap", "exchange the primary and secondary roles"),
        ("restart", "restart the application where it runs (stop then start scripts)"),
        ("stopstart", "stop the module then start it again (a mirror primary hands over)"),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("-m", dest="module", required=True, metavar="AM")
        p.add_argument("-i", dest="origin", metavar="WHO", help="who asks (a script's name), for the log")
        if verb == "second":
            p.add_argument("fullsync", nargs="?", choices=("fullsync",),
                           help="compare every block instead of sending only what changed meanwhile")
        p.set_defaults(func=_command, logged=True)

    p = sub.add_parser("boot", help="start a module at this node's boot or not, where its boot=\"ignore\"; "
                       "or say what the next boot does with it")
    p.add_argument("-m", dest="module", required=True, metavar="AM")
    p.add_argument("value", choices=("on", "off", "status"))
    p.set_defaults(func=_boot, logged=True)

    p = sub.add_parser("shutdown", help="stop every module of this node as its shutdown does "
                       "(a mirror primary hands over; boot=\"auto\" starts them again at the next boot)")
    p.set_defaults(func=_shutdown, logged=True)

    p = sub.add_parser("incloop", help="count one automatic restart against maxloop (exit 1 when reached)")
    p.add_argument("-m", dest="module", metavar="AM", default=os.environ.get("SAFEMODULE"))
    p.add_argument("-i", dest="origin", metavar="WHO", help="who counts (a script's name), for the log")
    p.set_defaults(func=_incloop, logged=True)

    p = sub.add_parser("vip", help="open or close this node's share of a farm's virtual IP "
                       "(with <vip scriptcontrol=\"on\">, from the module's scripts)")
    p.add_argument("action", choices=("open", "close"))
    p.add_argument("-m", dest="module", metavar="AM", default=os.environ.get("SAFEMODULE"))
    p.set_defaults(func=_vip, logged=True)

    p = sub.add_parser("update", help="apply the installed configuration to a running farm module "
                       "(virtual IPs, load-balancing rules, powers), then run its update script")
    p.add_argument("-m", dest="module", metavar="AM", default=os.environ.get("SAFEMODULE"))
    p.set_defaults(func=_update, logged=True)

    p = sub.add_parser("services", help="systemd services of a module's scripts (SERVICES macro)")
    p.add_argument("action", choices=("check", "noboot", "start", "stop"))
    p.add_argument("--force", action="store_true", help="with stop: kill what does not stop")
    p.add_argument("names", nargs="*", metavar="SERVICE", help="names, separated by spaces or commas")
    p.set_defaults(func=_services)


def _control(args: argparse.Namespace) -> int:
    req = {"module": args.module, "force": bool(getattr(args, "force", False))}
    _reached(args.module, ipc.call(paths().daemon_socket, args.verb, req, timeout=900.0))
    return 0


def _reached(module: str, result: dict[str, str]) -> None:
    note = f" ({result['note']})" if "note" in result else ""
    print(f"{module}: {result['state']} ({result['status']}){note}")


def _command(args: argparse.Namespace) -> int:
    req = {"module": args.module, "verb": args.verb, "fullsync": bool(getattr(args, "fullsync", None))}
    _reached(args.module, ipc.call(paths().daemon_socket, "command", req, timeout=900.0))
    return 0


def _boot(args: argparse.Namespace) -> int:
    r = ipc.call(paths().daemon_socket, "boot", {"module": args.module, "value": args.value})
    source = (f'boot="{r["configured"]}" in its configuration' if r["configured"] != "ignore" else
              f"hakit boot {r['setting']} on this node" if r["setting"] else "nothing set on this node")
    print(f"{args.module}: boot {r['boot']} ({source})")
    return 0


def _shutdown(args: argparse.Namespace) -> int:
    r = ipc.call(paths().daemon_socket, "shutdown", {}, timeout=900.0)
    for name in r["stopped"]:
        print(f"{name}: stopped")
    for name, why in r["failed"].items():
        print(f"hakit: {name}: {why}", file=sys.stderr)
    return 1 if r["failed"] else 0


def _incloop(args: argparse.Namespace) -> int:
    if not args.module:
        raise UsageError("incloop: give -m AM (outside module scripts SAFEMODULE is not set)")
    sock = paths().module_socket(args.module)
    result = ipc.call(sock, "incloop", {"who": args.origin}, what=f"module {args.module}")
    if not result["ok"]:
        print(f"{args.module}: maxloop reached", file=sys.stderr)
        return 1
    return 0


def _module_call(args: argparse.Namespace, op: str, req: dict[str, str]) -> dict[str, str]:
    if not args.module:
        raise UsageError(f"{args.verb}: give -m AM (outside module scripts SAFEMODULE is not set)")
    return ipc.call(paths().module_socket(args.module), op, req, timeout=900.0, what=f"module {args.module}")


def _vip(args: argparse.Namespace) -> int:
    result = _module_call(args, "vip", {"action": args.action})
    print(f"{args.module}: share of the virtual IP {'open' if result['open'] else 'closed'} on this node")
    return 0


def _update(args: argparse.Namespace) -> int:
    result = _module_call(args, "update", {})
    print(f"{args.module}: {result['state']} ({result['status']}), configuration applied")
    return 0


def _services(args: argparse.Namespace) -> int:
    names = [n for item in args.names for n in item.replace(",", " ").split()]
    if not names:
        return 0
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        raise HakitError("systemctl not found: SERVICES needs systemd on this node")
    commands = {
        "check": [["cat", "--"]],
        "noboot": [["disable", "--quiet", "--"]],
        "start": [["start", "--"], ["is-active", "--quiet", "--"]],
        "stop": [["stop", "--"]] + ([["kill", "--signal=KILL", "--"]] if args.force else []),
    }[args.action]
    for name in names:
        for cmd in commands:
            run = subprocess.run([systemctl, *cmd, name], capture_output=True, text=True)
            if run.returncode != 0 and cmd[0] != "kill":
                detail = (run.stderr or run.stdout).strip().splitlines()
                raise HakitError(
                    f"service {name}: systemctl {cmd[0]} failed" + (f": {detail[-1]}" if detail else "")
                )
    return 0
