"""One started module: its own process, supervised by hakitd.

It builds the module's parts (heartbeats, checkers, failover rules, VIP, scripts),
runs the automaton, and answers hakitd and the CLI on /run/hakit/modules/AM.sock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from hakit import ipc
from hakit.check.admin import AdminFlags
from hakit.check.base import CheckContext
from hakit.check.registry import Checks
from hakit.check.splitbrain import Witness
from hakit.config.cluster_model import Cluster
from hakit.config.loader import load_cluster
from hakit.config.module_model import Heart as HeartConfig
from hakit.config.module_model import StoreRetention
from hakit.config.rules import parse_rules
from hakit.errors import HakitError
from hakit.heart.incarnation import next_incarnation
from hakit.heart.link import Heart, Lan
from hakit.module.automaton import PRIMARY, Automaton, Parts, State, Status
from hakit.module.catalog import Catalog
from hakit.module.datastate import DataState
from hakit.module.failover import HEARTBEAT_RULE, RFS_RULE
from hakit.module.scripts import ScriptRunner, environment
from hakit.paths import Paths, paths
from hakit.rfs.mirror import Replication, Security
from hakit.runtime import credentials
from hakit.runtime.identity import local_node
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.store.module_store import Level, ModuleStore
from hakit.store.retention import Retention
from hakit.vip.alias import MirrorVip, addrs_of
from hakit.vip.farm import FarmVip

HEART_PORT_BASE = 9300  # + module id: each module has its own heartbeat port
COMMANDS = ("prim", "primforce", "second", "swap", "restart", "stopstart")


def _heart_lans(name: str, mode: str, svc: Any, cluster: Cluster, node: str, peers: list[str]) -> list[Lan]:
    if mode == "farm":
        names = [lan.name for lan in svc.farm.lans]
    elif svc.heart is not None and svc.heart.heartbeats:
        names = [h.name for h in svc.heart.heartbeats]
    else:
        # No <heartbeat> named: every LAN that joins the module's nodes.
        names = [lan.name for lan in cluster.lan_list
                 if all(cluster.addr(n, lan.name) for n in (node, *peers))]
    lans = []
    for lan in names:
        mine = cluster.addr(node, lan)
        if mine is None:
            raise HakitError(f"module {name}: this node ({node}) has no address on LAN {lan} in cluster.xml")
        addrs = {p: cluster.addr(p, lan) for p in peers}
        lans.append(Lan(lan, mine, {p: a for p, a in addrs.items() if a}))
    if not lans:
        raise HakitError(f"module {name}: no LAN of cluster.xml joins its nodes for heartbeats")
    return lans


class ModuleProcess:
    def __init__(self, name: str, p: Paths, intent: str | None, fullsync: bool = False) -> None:
        self.name = name
        self.paths = p
        catalog = Catalog(p)
        self.config = catalog.config(name)
        svc = self.config.service
        self.mode = svc.mode
        self.datastate_path = p.module_var(name) / "data.json"
        kept = svc.retention or StoreRetention()
        self.store = ModuleStore(p.module_db(name), Retention(kept.age, kept.size))
        self.log = ModuleLog(name, self.store)
        self.resources = Resources(self.store)
        self.scripts = ScriptRunner(name, self.config, p, self.log)
        heart: Heart | None = None
        peers: list[str] = []
        cluster: Cluster | None = None
        if self.mode == "light" and not p.cluster_xml.exists():
            node = os.uname().nodename
        else:
            if not p.cluster_xml.exists():
                raise HakitError(f"a {self.mode} module needs the cluster configuration, and "
                                 f"{p.cluster_xml} is missing: write it, then 'hakit cluster config'")
            cluster = load_cluster(p.cluster_xml)
            node = local_node(cluster)
        if self.mode != "light":
            assert cluster is not None
            nodes = catalog.nodes(name, cluster.node_names)
            if node not in nodes:
                raise HakitError(f"module {name} is configured on {', '.join(nodes)}, not on {node}")
            peers = [n for n in nodes if n != node]
            if self.mode == "mirror" and len(peers) != 1:
                raise HakitError(
                    f"a mirror module runs on exactly two nodes; {name} is configured on {', '.join(nodes)}: "
                    f"choose them with 'hakit -H \"nodeA,nodeB\" -E {name}'"
                )
            hc = svc.heart or HeartConfig()
            incarnation, trouble = next_incarnation(p.module_var(name) / "heart.incarnation")
            if trouble:
                self.log(Level.CRITICAL, "heart", trouble)
            heart = Heart(
                module=name, node=node, key=catalog.key(name),
                port=HEART_PORT_BASE + catalog.module_id(name), pulse=hc.pulse, timeout=hc.timeout,
                lans=_heart_lans(name, self.mode, svc, cluster, node, peers), incarnation=incarnation,
                resources=self.resources, log=self.log, on_change=self._peer_news,
            )
        self.heart = heart
        self.node = node
        for stale in self.resources.matching("*"):
            # (usersetting.*: the node's settings, which hakitd keeps, not this process's findings)
            if not stale.startswith(("module.", "usersetting.")):
                self.resources.set(stale, "unknown")
        ctx = CheckContext(
            module=name, node=node, paths=p, config=self.config, resources=self.resources, log=self.log,
            act=self._act, run_script=self._run_script, env=environment(name, self.config, p),
            module_state=self._module_state,
        )
        self.checks = Checks(ctx, self.mode)
        witness = Witness(ctx) if svc.checks is not None and svc.checks.splitbrain is not None else None
        rules = parse_rules(svc.failover.rules) if svc.failover is not None else []
        rules += self.checks.rules()
        if self.mode == "mirror":
            rules.append(HEARTBEAT_RULE)
        vip = MirrorVip(svc.vip, self.log) if svc.vip is not None and self.mode != "farm" else None
        self.farm: FarmVip | None = None
        if self.mode == "farm" and svc.vip is not None and addrs_of(svc.vip, True):
            self.farm = FarmVip(
                svc.vip, name, catalog.module_id(name), node, [node, *peers], p.run / "bpf", self.log,
                self.resources, on_change=lambda: self.automaton.advertise(),
                on_filter=lambda: self.automaton.wake(),
            )
        rfs, peer_addr = None, None
        if self.mode == "mirror" and svc.rfs is not None and heart is not None:
            assert cluster is not None
            flow = next((h.name for h in (svc.heart.heartbeats if svc.heart else ()) if h.ident == "flow"),
                        heart.lans[0].name)
            peer_addr = cluster.addr(peers[0], flow)
            # Every mirror's stream is encrypted (TLS 1.3, node certificates) and authenticated
            # (the module key, both ways): docs/replication.md, "Security of the stream".

            ca, cert, key = credentials.credential_files(p)
            rfs = Replication(
                module=name, module_id=catalog.module_id(name), cfg=svc.rfs, paths=p, log=self.log,
                resources=self.resources, local_addr=cluster.addr(node, flow) or "",
                security=Security(catalog.key(name), (cert, key, ca)),
                on_detached=lambda: self.automaton.stream_lost(),
                on_progress=lambda: self.automaton.advertise(),
                on_died=lambda role: self.automaton.rfs_died(role),
            )
            rules.append(RFS_RULE)
        if intent == "prim" and self.mode == "mirror":
            refusal = DataState.load(self.datastate_path).prim_refusal()
            if refusal:
                raise HakitError(f"prim refused: {refusal}")
        self.automaton = Automaton(
            Parts(name=name, node=node, mode=self.mode, config=self.config, resources=self.resources,
                  log=self.log, scripts=self.scripts, checks=self.checks, heart=heart, peers=peers, vip=vip,
                  witness=witness, datastate_path=self.datastate_path, rfs=rfs, peer_addr=peer_addr,
                  farm=self.farm),
            rules, intent, fullsync,
        )

    # -- callbacks given to the parts
    def _peer_news(self) -> None:
        assert self.heart is not None
        for peer in self.heart.peers:
            news = self.heart.peer(peer)
            value = f"{news.get('state')} ({news.get('status')})" if news else "lost"
            self.resources.set(f"peer.{peer}", value)
        if self.farm is not None:
            self.farm.set_peers({peer: self.heart.peer(peer) for peer in self.heart.peers})
        self.automaton.check_fence()
        self.automaton.wake()

    async def _act(self, action: str, origin: str) -> None:
        self.automaton.queue_automatic(action, origin)

    async def _run_script(self, script: str) -> int | None:
        return (await self.scripts.run(script)).code

    async def _module_state(self, module: str, addr: str | None, port: int) -> tuple[str, str] | None:
        if addr is None:
            with ModuleStore(self.paths.module_db(module)) as store:
                return store.state()
        from hakit.runtime.rpc_client import acall_node

        try:
            got = await acall_node(self.paths, addr, "module_state", {"module": module}, port=port)
        except (HakitError, OSError):
            return None
        return str(got["state"]), str(got["status"])

    def _vip(self, action: str, user: str) -> dict[str, bool]:
        """vip open|close, usually from start_both/stop_both: served at once, not queued
        behind the transition that runs the script."""
        farm = self.farm
        if farm is None:
            raise HakitError(f"module {self.name} has no shared virtual IP (a farm's <virtual_interface>)")
        if not farm.config.scriptcontrol:
            raise HakitError("vip open|close needs <vip scriptcontrol=\"on\">; without it the module opens "
                             "this node's share when it is UP and closes it when it stops")
        if farm.maps is None:
            raise HakitError(f"module {self.name} is {self.automaton.state}: "
                             "its virtual IP is not set up here")
        if action not in ("open", "close"):
            raise HakitError(f"vip: unknown action '{action}' (open or close)")
        self.log(Level.USER, "vip", f"vip {action} requested by {user}")
        if action == "open":
            farm.open()
        else:
            farm.close()
        return {"open": farm.opened}

    # -- requests from hakitd and the CLI: one handler per op (HANDLERS)
    async def handle(self, op: str, args: dict[str, Any], user: str) -> Any:
        handler = HANDLERS.get(op)
        if handler is None:
            raise HakitError(f"unknown module request '{op}'")
        return await handler(self, args, user)

    async def _state(self, args: dict[str, Any], user: str) -> Any:
        return self.automaton.summary()

    async def _stop(self, args: dict[str, Any], user: str) -> Any:
        a = self.automaton
        self.log(Level.USER, "module", f"Action stop requested by {user}")
        await a.submit(lambda: a.finish(force=bool(args.get("force"))))
        return a.summary()

    async def _command(self, args: dict[str, Any], user: str) -> Any:
        a = self.automaton
        verb = str(args.get("verb"))
        if verb not in COMMANDS:
            raise HakitError(f"unknown command '{verb}'")
        fullsync = bool(args.get("fullsync"))
        action = f"{verb} fullsync" if fullsync else verb
        self.log(Level.USER, "module", f"Action {action} requested by {user}")
        return await a.submit(lambda: a.command(verb, fullsync))

    async def _rfsdiff(self, args: dict[str, Any], user: str) -> Any:
        a = self.automaton
        if a.p.rfs is None:
            raise HakitError(f"module {self.name} replicates no directory")
        if a.state not in PRIMARY:
            raise HakitError(f"rfsdiff: module {self.name} is {a.state} on this node; run it on the primary")
        return {"dirs": await a.p.rfs.rfsdiff(), "rate": a.p.rfs.rate}

    async def _vip_request(self, args: dict[str, Any], user: str) -> Any:
        return self._vip(str(args.get("action")), user)

    async def _update(self, args: dict[str, Any], user: str) -> Any:
        a = self.automaton
        self.log(Level.USER, "module", f"Action update requested by {user}")
        config = Catalog(self.paths).config(self.name)
        if config.service.mode != self.mode or config.service.vip is None:
            raise HakitError(f"update: the installed configuration of {self.name} is not a farm with a "
                             "<vip>; stop and start the module to change that")
        self.scripts.config = config
        vip = config.service.vip
        return await a.submit(lambda: a.update(vip))

    async def _incloop(self, args: dict[str, Any], user: str) -> Any:
        a = self.automaton
        who = str(args.get("who") or user)
        ok = a.budget.spend()
        self.log(Level.EVENT, "module",
                 f"Loop counter incremented by {who}: {len(a.budget.stamps)}/{a.budget.maxloop}")
        return {"ok": ok}

    async def _set(self, args: dict[str, Any], user: str) -> Any:
        self.checks.set(str(args.get("resource", "")), str(args.get("value", "")))
        return None

    async def _errd(self, args: dict[str, Any], user: str) -> Any:
        klass = str(args.get("klass", ""))
        if args.get("verb") == "enable":
            await self.checks.errd.enable_class(klass)
        else:
            await self.checks.errd.disable_class(klass)
        return None

    async def _admin(self, args: dict[str, Any], user: str) -> Any:
        task = self.checks.apply_admin(AdminFlags.load(self.paths, self.name))
        if task is not None:
            await task
        return None


Handler = Callable[[ModuleProcess, dict[str, Any], str], Awaitable[Any]]
HANDLERS: dict[str, Handler] = {
    "state": ModuleProcess._state, "stop": ModuleProcess._stop, "command": ModuleProcess._command,
    "rfsdiff": ModuleProcess._rfsdiff, "vip": ModuleProcess._vip_request, "update": ModuleProcess._update,
    "incloop": ModuleProcess._incloop, "set": ModuleProcess._set, "errd": ModuleProcess._errd,
    "admin": ModuleProcess._admin,
}


async def _main(name: str, intent: str | None, fullsync: bool) -> int:
    p = paths()
    try:
        mod = ModuleProcess(name, p, intent, fullsync)
    except (HakitError, OSError) as exc:
        store = ModuleStore(p.module_db(name))
        store.log(Level.CRITICAL, "module", f"Module cannot start: {exc}")
        store.set_resource("module.state", str(State.STOP))
        store.close()
        print(f"hakit module {name}: {exc}", file=sys.stderr)
        return 1
    server = await ipc.serve(p.module_socket(name), mod.handle)
    loop = asyncio.get_running_loop()
    a = mod.automaton
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: a.submit(a.finish))
    try:
        if mod.heart is not None:
            try:
                await mod.heart.start()
            except OSError as exc:
                mod.log(Level.CRITICAL, "module", f"Module cannot start: {exc}")
                a.set_state(State.STOP, Status.NOT_READY)
                return 1
        await a.run()
        return 0
    finally:
        if mod.heart is not None:
            await mod.heart.stop(a.payload())
        server.close()
        with contextlib.suppress(FileNotFoundError):
            p.module_socket(name).unlink()
        mod.store.close()


async def _cleanup(name: str) -> int:
    """After a crash of the module process: stop what the state it died in had started."""
    p = paths()
    store = ModuleStore(p.module_db(name))
    try:
        last = store.resource("module.state")
    finally:
        store.close()
    try:
        mod = ModuleProcess(name, p, None)
    except (HakitError, OSError) as exc:
        print(f"hakit module {name}: cleanup impossible: {exc}", file=sys.stderr)
        return 1
    a = mod.automaton
    a.state = State(last.value) if last is not None and last.value in State.__members__ else State.STOP
    a.log(Level.CRITICAL, "module", f"Cleaning up after a crash in state {a.state}")
    try:
        if mod.farm is not None:
            # The filter stays attached (established flows go on being served, nothing
            # unfiltered reaches the stack); this node only stops taking new clients.
            mod.farm.disown()
        await a.stop_application(force=True)
        if a.p.vip is not None:
            await a.p.vip.clear_stale()
        if a.p.rfs is not None:
            await a.p.rfs.stop_orphans()
        await mod.scripts.run("poststop", "force")
    finally:
        a.set_state(State.STOP, Status.NOT_READY)
        mod.store.close()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="hakit-module")
    parser.add_argument("module")
    parser.add_argument("--intent", choices=("prim", "primforce", "second"))
    parser.add_argument("--fullsync", action="store_true",
                        help="with --intent second: synchronised fully")
    parser.add_argument("--cleanup", action="store_true",
                        help="stop what a crashed module process left running")
    args = parser.parse_args()
    import uvloop

    if args.cleanup:
        sys.exit(uvloop.run(_cleanup(args.module)))
    sys.exit(uvloop.run(_main(args.module, args.intent, args.fullsync)))


if __name__ == "__main__":
    main()
