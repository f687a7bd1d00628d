"""`safekit`: SafeKit's command syntax, as module scripts written for SafeKit call it
(`$SAFE/safekit printi ...`), carried out by hakit's commands.

Same verbs, same options, with SafeKit's few differences translated:
- `safekit -r saferpc_send vipd SETGROUPS all all all` (or `none none none`) opens (or
  closes) this node's share of a farm's virtual IP: `hakit vip open|close`.
- In a module's scripts, a verb that names a module takes it from SAFEMODULE when `-m`
  is not given (`safekit stop -i restart_myappli`).
- A SafeKit verb hakit does not implement is refused with its name, never run as
  something else.
`exitcode N` ($SAFEBIN/exitcode in SafeKit's scripts) exits with N.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from hakit.cli import main as hakit_cli

SETGROUPS = ["-r", "saferpc_send", "vipd", "SETGROUPS"]


def translate(argv: Sequence[str], module: str | None) -> list[str]:
    """hakit's arguments for a SafeKit command line; UsageError-like SystemExit(2) when
    hakit has no such verb."""
    argv = list(argv)
    if argv[:4] == SETGROUPS:
        groups = argv[4:]
        if groups and all(g == "all" for g in groups):
            return ["vip", "open"]
        if groups and all(g == "none" for g in groups):
            return ["vip", "close"]
        _refuse(f"-r saferpc_send vipd SETGROUPS {' '.join(groups)}: hakit opens or closes the whole share "
                "(all all all, or none none none)")
    if argv[:1] == ["-r"]:
        _refuse(f"-r {' '.join(argv[1:3])}: hakit implements only saferpc_send vipd SETGROUPS")
    verbs = _verbs()
    if not argv or argv[0] not in verbs:
        shown = argv[0] if argv else "(none)"
        _refuse(f"{shown}: not a verb hakit implements (it implements: {', '.join(sorted(verbs))})")
    if module and "-m" not in argv and verbs[argv[0]]:
        argv[1:1] = ["-m", module]
    return argv


def _verbs() -> dict[str, bool]:
    """hakit's verbs, each with whether it needs a module (-m, required)."""
    parser = hakit_cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        verb: any(a.dest == "module" and a.required for a in p._actions)
        for verb, p in sub.choices.items()
    }


def _refuse(why: str) -> None:
    print(f"safekit: {why}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return hakit_cli.main(translate(args, os.environ.get("SAFEMODULE") or None))


def exitcode(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args[0]) if args else 0
    except ValueError:
        print(f"exitcode: {args[0]!r} is not a number", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
