"""`hakit status`: the whole cluster at a glance, one row per module and one column per node
(as `pcs status` or `crm_mon` show a cluster).  Each node tells its own modules over the RPC
the web console uses (node/web/peers.py), so a node that does not answer is shown as such,
with why, instead of failing the command."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from hakit.paths import paths

NOT_THERE = "-"
UNREACHABLE = "unreachable"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="every module on every node of the cluster (modules x nodes)")
    p.set_defaults(func=_status)


def _status(_args: argparse.Namespace) -> int:
    print(render(asyncio.run(_overview())), end="")
    return 0


async def _overview() -> dict[str, Any]:
    # (imported here: the other verbs need neither the RPC client nor the web package)
    from hakit.node.web.peers import Peers

    peers = Peers(paths())
    try:
        return await peers.overview()
    finally:
        peers.close()


def cell(module: dict[str, Any], node: dict[str, Any]) -> str:
    state = module["states"].get(node["name"])
    if state is not None and state["state"] is not None:
        return f"{state['state']} ({state['status']})"
    if state is not None:
        return NOT_THERE  # the node answered: the module is not installed there
    # Nothing from that node: it is down, or the module is not installed there.
    return UNREACHABLE if not node["up"] and node["name"] in module["nodes"] else NOT_THERE


def render(view: dict[str, Any]) -> str:
    """The overview (Peers.overview) as a table, then what is wrong below it."""
    nodes = view["nodes"]
    rows = [["MODULE", "MODE", *(n["name"] for n in nodes)]]
    rows += [[m["name"], m["mode"] or "?", *(cell(m, n) for n in nodes)] for m in view["modules"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if not view["modules"]:
        lines.append("(no module installed on the nodes that answered)")
    notes = [f"{n['name']} {UNREACHABLE}: {str(n['error']).removeprefix(n['name'] + ': ')}"
             for n in nodes if not n["up"]]
    notes += [f"{m['name']} on {node}: {s['error']}" for m in view["modules"]
              for node, s in m["states"].items()
              if s is not None and s.get("error") and s["state"] is not None]
    if view.get("problem"):
        notes.append(view["problem"])
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"
