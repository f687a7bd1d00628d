"""Controlling modules through hakitd (start, stop) and the systemd services of
module scripts (hakit services ...)."""

from __future__ import annotations

import argparse
import shutil
import subprocess

from hakit import ipc
from hakit.errors import HakitError
from hakit.paths import paths


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for verb, text in (("start", "start a module on this node"), ("stop", "stop a module on this node")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("-m", dest="module", required=True, metavar="AM")
        p.add_argument("-i", dest="origin", metavar="WHO", help="who asks (a script's name), for the log")
        if verb == "stop":
            p.add_argument("--force", action="store_true", help="pass 'force' to the stop scripts")
        p.set_defaults(func=_control, logged=True)

    p = sub.add_parser("services", help="systemd services of a module's scripts (SERVICES macro)")
    p.add_argument("action", choices=("check", "noboot", "start", "stop"))
    p.add_argument("--force", action="store_true", help="with stop: kill what does not stop")
    p.add_argument("names", nargs="*", metavar="SERVICE", help="names, separated by spaces or commas")
    p.set_defaults(func=_services)


def _control(args: argparse.Namespace) -> int:
    req = {"module": args.module, "force": bool(getattr(args, "force", False))}
    result = ipc.call(paths().daemon_socket, args.verb, req, timeout=900.0)
    print(f"{args.module}: {result['state']} ({result['status']})")
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
