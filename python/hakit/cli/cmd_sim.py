"""`hakit sim`: a simulated cluster of hakit nodes on this machine (tests, demo, benchmarks)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from hakit.errors import HakitError, UsageError
from hakit.testing.sim import DEFAULT_NAME, STANDARD_DIRS, Sim, SimStatus

_DESCRIPTION = """\
Each node is a network namespace (ethK on LAN K, a bridge on this host) plus a mount
namespace in which the node's own directories appear at /etc/hakit, /var/lib/hakit,
/var/log/hakit and /run/hakit.  Needs root."""
EXEC_USAGE = "hakit sim exec NODE [--name NAME] -- CMD ..."


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("sim", help="simulated cluster on this machine", description=_DESCRIPTION)
    verbs = parser.add_subparsers(dest="sim_verb", metavar="ACTION", parser_class=type(parser))
    verbs.required = True

    def verb(
        name: str, summary: str, node_args: int = 0, usage: str | None = None
    ) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=summary, description=summary, usage=usage)
        p.add_argument(
            "--name", default=DEFAULT_NAME, help=f"which simulated cluster (default: {DEFAULT_NAME})"
        )
        if node_args:
            p.add_argument("nodes", metavar="NODE", nargs=node_args, help="node1, node2, ...")
        return p

    p = verb("up", "create the cluster and start hakitd on every node")
    p.add_argument("--nodes", type=int, default=2, help="number of nodes (default: 2)")
    p.add_argument(
        "--lans", type=int, default=1, help="number of LANs: default, private, lan3... (default: 1)"
    )
    p.add_argument("--no-daemon", action="store_true", help="do not start hakitd")
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="DIR",
        help="another directory each node has its own copy of (repeatable)",
    )
    p.set_defaults(func=_up)

    p = verb("status", "nodes, addresses, daemons and where their files are")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_status)

    p = verb(
        "exec",
        "run a command inside a node (exit status is the command's)",
        usage=EXEC_USAGE,
    )
    # argparse cannot tell a --name after NODE from the command's own options: NODE,
    # --name and the command are split at "--" by _exec_split.
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="NODE [--name NAME] -- CMD ...")
    p.set_defaults(func=_exec)

    verb("kill", "crash a node: kill all its processes, cut its cables", 1).set_defaults(func=_kill)
    verb("revive", "boot a killed node again (and its daemon)", 1).set_defaults(func=_revive)
    verb("reboot", "reboot a node cleanly: its daemon stopped as at shutdown, then kill and revive",
         1).set_defaults(func=_reboot)
    verb("freeze", "hang a node: stop all its processes", 1).set_defaults(func=_freeze)
    verb("thaw", "resume a frozen node", 1).set_defaults(func=_thaw)
    for name, summary, func in (("unplug", "delete a node's interface on a LAN (ethK)", _unplug),
                                ("plug", "create a node's interface on a LAN again", _plug)):
        p = verb(name, summary, 1)
        p.add_argument("--lan", type=int, default=0, help="which LAN (default: 0, eth0)")
        p.set_defaults(func=func)
    verb("cut", "drop all traffic between two nodes, on every LAN", 2).set_defaults(func=_cut)
    verb("heal", "remove every cut").set_defaults(func=_heal)

    p = verb("down", "remove the cluster and everything it created")
    p.add_argument(
        "--all",
        action="store_true",
        help="remove every simulated cluster on this machine and any leftover, except those of running tests",
    )
    p.set_defaults(func=_down)


def _up(args: argparse.Namespace) -> int:
    sim = Sim(args.name)
    try:
        sim.up(args.nodes, lans=args.lans, daemon=not args.no_daemon, paths=args.path)
    finally:
        # A daemon that did not start still leaves the cluster up: show it with the error.
        if sim.exists():
            _print_status(sim.status())
    return 0


def _status(args: argparse.Namespace) -> int:
    status = Sim.load(args.name).status()
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        _print_status(status)
    return 0


def _exec_split(rest: list[str], name: str) -> tuple[str, str, list[str]]:
    """(name, node, command) from `NODE [--name NAME] -- CMD...`, or `NODE CMD...`."""
    if "--" in rest:
        cut = rest.index("--")
        head, command = rest[:cut], rest[cut + 1 :]
    else:
        head, command = rest[:1], rest[1:]
        # `exec node1 --name x` is more likely a forgotten -- than a command named --name.
        if command[:1] and command[0].startswith("-"):
            command = []
    nodes = []
    it = iter(head)
    for tok in it:
        if tok == "--name":
            name = next(it, "")
        elif tok.startswith("--name="):
            name = tok.split("=", 1)[1]
        elif tok.startswith("-"):
            raise UsageError(f"sim exec: unknown option {tok}; usage: {EXEC_USAGE}")
        else:
            nodes.append(tok)
    if len(nodes) != 1 or not command or not name:
        raise UsageError(f"sim exec: usage: {EXEC_USAGE} (the command comes after --)")
    return name, nodes[0], command


def _exec(args: argparse.Namespace) -> int:
    name, node, command = _exec_split(args.rest, args.name)
    argv, env = Sim.load(name).command(node, command)
    sys.stdout.flush()
    sys.stderr.flush()
    # The launcher becomes the command: the terminal, signals and exit status are its own.
    os.execve(argv[0], argv, env)


def _kill(args: argparse.Namespace) -> int:
    Sim.load(args.name).kill(args.nodes[0])
    return 0


def _revive(args: argparse.Namespace) -> int:
    Sim.load(args.name).revive(args.nodes[0])
    return 0


def _reboot(args: argparse.Namespace) -> int:
    Sim.load(args.name).reboot(args.nodes[0])
    return 0


def _freeze(args: argparse.Namespace) -> int:
    Sim.load(args.name).freeze(args.nodes[0])
    return 0


def _thaw(args: argparse.Namespace) -> int:
    Sim.load(args.name).thaw(args.nodes[0])
    return 0


def _unplug(args: argparse.Namespace) -> int:
    Sim.load(args.name).unplug(args.nodes[0], args.lan)
    return 0


def _plug(args: argparse.Namespace) -> int:
    Sim.load(args.name).plug(args.nodes[0], args.lan)
    return 0


def _cut(args: argparse.Namespace) -> int:
    Sim.load(args.name).cut(*args.nodes)
    return 0


def _heal(args: argparse.Namespace) -> int:
    Sim.load(args.name).heal()
    return 0


def _down(args: argparse.Namespace) -> int:
    if args.all:
        removed = Sim.down_all()
        print(f"removed: {', '.join(removed)}" if removed else "no simulated cluster to remove")
        for name in Sim.names():
            try:
                owner = Sim.load(name).status().owner_pid
            except HakitError:
                continue  # removed meanwhile by its owner
            print(f"kept {name}: in use by process {owner}, which removes it when it ends")
    else:
        Sim(args.name).down()
    return 0


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _print_status(st: SimStatus) -> None:
    owner = f", owned by pid {st.owner_pid}" if st.owner_pid is not None else ""
    print(f"simulated cluster {st.name!r}: {len(st.nodes)} nodes, {len(st.lans)} LANs{owner}\n")
    print(
        _table(
            [["LAN", "BRIDGE", "SUBNET", "HOST"]]
            + [[lan.name, lan.bridge, lan.subnet, lan.host_addr] for lan in st.lans]
        )
    )
    print()
    rows = [["NODE", "STATE", *(lan.name.upper() for lan in st.lans), "DAEMON"]]
    for n in st.nodes:
        daemon = f"running (pid {n.daemon_pid})" if n.daemon == "running" else n.daemon
        rows.append([n.name, n.state, *n.addrs, daemon])
    print(_table(rows))
    if st.cuts:
        print("\ncuts: " + ", ".join(f"{a} x {b}" for a, b in st.cuts))
    node_dir = os.path.join(os.path.dirname(st.nodes[0].dir), "NODE")
    print(f"\nfiles of each node, on this host: {node_dir}/")
    print(
        _table(
            [[f"  {sub}/", f"-> {path}"] for sub, path in STANDARD_DIRS]
            + [[f"  paths{path}/", f"-> {path}"] for path in st.paths]
        )
    )
    print(f"daemon log: {node_dir}/log/hakitd.out")
    print(f"enter a node: hakit sim exec NODE --name {st.name} -- CMD...")
