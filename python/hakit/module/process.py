"""One started module: its own process, supervised by hakitd.

It assembles the module's parts (heartbeats, checkers, failover rules, VIP, scripts:
module/assembly.py builds each), runs the automaton, and answers hakitd and the CLI
on /run/hakit/modules/AM.sock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from hakit import ipc
from hakit.check.admin import AdminFlags
from hakit.check.registry import Checks
from hakit.errors import HakitError
from hakit.module import assembly
from hakit.module.automaton import Automaton, Parts
from hakit.module.catalog import Catalog
from hakit.module.failover import RFS_RULE
from hakit.module.scripts import ScriptRunner
from hakit.module.states import PRIMARY, RESUME_REFUSED, State, Status
from hakit.paths import Paths, paths
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.store.module_store import Level, ModuleStore

COMMANDS = ("prim", "primforce", "second", "swap", "restart", "stopstart")


class ModuleProcess:
    def __init__(self, name: str, p: Paths, intent: str | None, fullsync: bool = False) -> None:
        # The configuration, and where the module runs.
        self.name = name
        self.paths = p
        catalog = Catalog(p)
        self.config = catalog.config(name)
        svc = self.config.service
        self.mode = svc.mode
        self.datastate_path = p.module_var(name) / "data.json"
        self.store = assembly.open_store(name, svc, p)
        self.log = ModuleLog(name, self.store)
        self.resources = Resources(self.store)
        self.scripts = ScriptRunner(name, self.config, p, self.log, record=self.resources.set)
        nodes = assembly.locate(name, self.mode, catalog, p)
        site = assembly.Site(name, self.config, p, catalog, nodes, self.log, self.resources)
        node, peers = nodes.node, nodes.peers
        self.node = node
        # The parts (module/assembly.py), in this order: of two mistakes in the
        # configuration, the user hears of the earlier part's.
        self.heart = heart = assembly.heart(site, on_change=self._peer_news)
        assembly.forget_findings(self.resources)
        ctx = assembly.check_context(site, act=self._act, run_script=self._run_script,
                                     module_state=self._module_state)
        self.checks = Checks(ctx, self.mode)
        witness = assembly.witness(ctx)
        rules = assembly.failover_rules(svc, self.checks)
        vip = assembly.mirror_vip(site)
        self.farm = assembly.farm_vip(site, on_change=lambda: self.automaton.advertise(),
                                      on_filter=lambda: self.automaton.wake())
        rfs, peer_addr = assembly.replication(
            site, heart, on_detached=lambda: self.automaton.stream_lost(),
            on_progress=lambda: self.automaton.advertise(),
            on_died=lambda role: self.automaton.rfs_died(role),
        )
        if rfs is not None:
            rules.append(RFS_RULE)
        assembly.refuse_prim(intent, self.mode, self.datastate_path)
        # The automaton, which drives them.
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


async def _main(name: str, intent: str | None, fullsync: bool, resume: bool = False) -> int:
    p = paths()
    try:
        mod = ModuleProcess(name, p, intent, fullsync)
    except (HakitError, OSError) as exc:
        store = ModuleStore(p.module_db(name))
        store.log(Level.CRITICAL, "module", f"Module cannot start: {exc}")
        if resume:
            store.close()
            return RESUME_REFUSED  # the crash cleanup still has to stop what runs
        store.set_resource("module.state", str(State.STOP))
        store.close()
        print(f"hakit module {name}: {exc}", file=sys.stderr)
        return 1
    a = mod.automaton
    if resume:
        # Before the heart beats: the state it advertises is the one taken over.
        why = await a.resume()
        if why is not None:
            mod.log(Level.CRITICAL, "module", f"Cannot take over what the module process that died ran: "
                    f"{why}; stopping it to start afresh")
            mod.store.close()
            return RESUME_REFUSED
    server = await ipc.serve(p.module_socket(name), mod.handle)
    loop = asyncio.get_running_loop()
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
        await a.run(resumed=resume)
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
    parser.add_argument("--resume", action="store_true",
                        help="take over what a crashed module process left running "
                             f"(exit status {RESUME_REFUSED} when it cannot)")
    args = parser.parse_args()
    import uvloop

    if args.cleanup:
        sys.exit(uvloop.run(_cleanup(args.module)))
    sys.exit(uvloop.run(_main(args.module, args.intent, args.fullsync, args.resume)))


if __name__ == "__main__":
    main()
