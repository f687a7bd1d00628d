"""Checkers and process monitoring from the command line and from module scripts:
hakit errd ..., hakit checker on|off, hakit set, hakit kill.

Scripts call these without -m: the module comes from SAFEMODULE, which the module
process puts in every script's environment.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import select
import signal
import time
from typing import Any

from hakit import ipc, linear_re
from hakit.check.admin import AdminFlags
from hakit.check.procs import ProcMatcher, own_netns
from hakit.errors import HakitError, UsageError
from hakit.module.catalog import Catalog
from hakit.paths import Paths, paths

MODULE_ENV = "SAFEMODULE"
ERRD_ADMIN = {"suspend": "suspended", "resume": "on", "off": "off", "on": "on"}
# hakit kill -level=terminate: how long the processes get to exit before SIGKILL
TERMINATE_GRACE_S = 5.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("errd", help="process monitoring of a module (persistent switches, classes)")
    verbs = p.add_subparsers(dest="errd_verb", metavar="VERB", parser_class=type(p))
    verbs.required = True
    for verb, text in (
        ("suspend", "stop process monitoring (kept across restarts) until resume"),
        ("resume", "process monitoring on again"),
        ("off", "stop process monitoring (kept across restarts) until on"),
        ("on", "process monitoring on again"),
    ):
        v = verbs.add_parser(verb, help=text)
        _module_arg(v)
        v.set_defaults(func=_errd_admin, logged=True)
    for verb, text in (("enable", "start monitoring the <proc> of CLASS"),
                       ("disable", "stop monitoring the <proc> of CLASS")):
        v = verbs.add_parser(verb, help=f"{text} (running module)")
        v.add_argument("klass", metavar="CLASS")
        _module_arg(v)
        v.set_defaults(func=_errd_class, logged=True)

    p = sub.add_parser("checker", help="turn every checker of a module off or on (kept across restarts)")
    p.add_argument("state", choices=("on", "off"))
    _module_arg(p)
    p.set_defaults(func=_checker, logged=True)

    p = sub.add_parser("set", help="set a custom checker's resource (from the checker program)")
    _module_arg(p)
    p.add_argument("-r", dest="resource", required=True, metavar="RESOURCE", help="custom.<ident>")
    p.add_argument("-v", dest="value", required=True, metavar="VALUE", help="up or down")
    p.set_defaults(func=_set, logged=True)

    p = sub.add_parser(
        "kill", help="signal this node's processes named NAME (SafeKit syntax: -level=terminate -name=NAME)"
    )
    p.add_argument("-level", default="terminate", metavar="LEVEL",
                   help=f"terminate (SIGTERM, then SIGKILL after {TERMINATE_GRACE_S:g} s), "
                        "kill (SIGKILL), or a signal name such as hup")
    p.add_argument("-name", required=True, metavar="NAME", help="process name (comm, as ps shows it)")
    p.add_argument("-argregex", metavar="REGEX", help="only processes whose command line matches")
    p.add_argument("-m", dest="module", metavar="AM", help="accepted for SafeKit compatibility")
    p.set_defaults(func=_kill, logged=True)


def _module_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", dest="module", metavar="AM", help=f"module (default: ${MODULE_ENV})")


def _module(args: argparse.Namespace) -> tuple[Paths, str]:
    name = args.module or os.environ.get(MODULE_ENV)
    if not name:
        raise UsageError(f"which module? give -m AM (module scripts have it in ${MODULE_ENV})")
    p = paths()
    Catalog(p).require(name)
    return p, name


def _ask_module(p: Paths, name: str, op: str, req: dict[str, Any]) -> Any:
    return ipc.call(p.module_socket(name), op, req, timeout=60.0, what=f"module {name}")


def _update_admin(args: argparse.Namespace, **change: str) -> int:
    p, name = _module(args)
    flags = dataclasses.replace(AdminFlags.load(p, name), **change)
    flags.save(p, name)
    # A running module applies it now; a stopped one reads it when it starts.
    running = ipc.answering(p.module_socket(name))
    if running:
        _ask_module(p, name, "admin", {})
    print(f"{name}: errd {flags.errd}, checkers {flags.checker}" + ("" if running else " (module stopped)"))
    return 0


def _errd_admin(args: argparse.Namespace) -> int:
    return _update_admin(args, errd=ERRD_ADMIN[args.errd_verb])


def _checker(args: argparse.Namespace) -> int:
    return _update_admin(args, checker=args.state)


def _require_running(p: Paths, name: str, what: str) -> None:
    if not ipc.answering(p.module_socket(name)):
        raise HakitError(f"module {name} is not running on this node; {what} applies to a running module")


def _errd_class(args: argparse.Namespace) -> int:
    p, name = _module(args)
    _require_running(p, name, f"'hakit errd {args.errd_verb}'")
    _ask_module(p, name, "errd", {"verb": args.errd_verb, "klass": args.klass})
    return 0


def _set(args: argparse.Namespace) -> int:
    p, name = _module(args)
    _require_running(p, name, "'hakit set'")
    _ask_module(p, name, "set", {"resource": args.resource, "value": args.value})
    return 0


def _signal(level: str) -> signal.Signals:
    named = {"terminate": signal.SIGTERM, "kill": signal.SIGKILL}
    if level.lower() in named:
        return named[level.lower()]
    wanted = level.upper() if level.upper().startswith("SIG") else f"SIG{level.upper()}"
    try:
        return signal.Signals[wanted]
    except KeyError:
        raise UsageError(
            f"unknown -level {level!r}: terminate, kill, or a signal name (hup, usr1, ...)"
        ) from None


def _kill(args: argparse.Namespace) -> int:
    sig = _signal(args.level)
    if args.argregex is not None:
        try:
            linear_re.compile(args.argregex)
        except ValueError as exc:
            raise UsageError(f"-argregex: {exc}") from None
    matcher = ProcMatcher(args.name, None, args.argregex, own_netns())
    # pidfds name the processes found, so a pid reused meanwhile is never signalled.
    pidfds = []
    for pid in sorted(matcher.scan() - {os.getpid()}):
        try:
            pidfds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            continue
    try:
        for fd in pidfds:
            _send(fd, sig)
        if sig == signal.SIGTERM:
            for fd in _still_running(pidfds, TERMINATE_GRACE_S):
                _send(fd, signal.SIGKILL)
    finally:
        for fd in pidfds:
            os.close(fd)
    return 0


def _send(pidfd: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, sig)


def _still_running(pidfds: list[int], timeout: float) -> list[int]:
    """The pidfds whose process has not exited within timeout (a pidfd turns readable on exit)."""
    waiting = set(pidfds)
    poller = select.poll()
    for fd in waiting:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while waiting and (left := deadline - time.monotonic()) > 0:
        for fd, _mask in poller.poll(left * 1000):
            waiting.discard(fd)
            poller.unregister(fd)
    return [fd for fd in pidfds if fd in waiting]
