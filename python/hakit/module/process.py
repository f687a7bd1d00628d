"""One started module: its own process, supervised by hakitd.

It owns the module's state, runs its scripts at each transition and answers hakitd
on /run/hakit/modules/AM.sock.  This build drives the single-node (light) life
cycle; mirror and farm automata come with the heartbeat engine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from enum import StrEnum
from typing import Any

from hakit import ipc
from hakit.errors import HakitError
from hakit.module.catalog import Catalog
from hakit.module.log import ModuleLog
from hakit.module.scripts import ScriptRunner
from hakit.paths import Paths, paths
from hakit.store.module_store import Level, ModuleStore


class State(StrEnum):
    STOP = "STOP"
    WAIT = "WAIT"
    ALONE = "ALONE"
    PRIM = "PRIM"
    SECOND = "SECOND"
    UP = "UP"


class Status(StrEnum):
    READY = "Ready"
    TRANSIENT = "Transient"
    NOT_READY = "NotReady"


class ModuleProcess:
    def __init__(self, name: str, p: Paths) -> None:
        self.name = name
        self.paths = p
        self.config = Catalog(p).config(name)
        self.store = ModuleStore(p.module_db(name))
        self.log = ModuleLog(name, self.store)
        self.scripts = ScriptRunner(name, self.config, p, self.log)
        self.stopped = asyncio.Event()
        self._stopping = False

    def set_state(self, state: State, status: Status) -> None:
        changed = self.store.set_resource("module.state", str(state))
        changed |= self.store.set_resource("module.status", str(status))
        if changed:
            self.log(Level.EVENT, "module", f"Module state {state} ({status})")

    async def start(self) -> None:
        mode = self.config.service.mode
        if mode != "light":
            raise HakitError(
                f"module {self.name} is a {mode} module; starting {mode} modules needs the "
                "cluster engine, not part of this build"
            )
        self.set_state(State.WAIT, Status.TRANSIENT)
        if not (await self.scripts.run("prestart")).ok:
            await self.stop(force=True, reason="prestart failed")
            return
        if not (await self.scripts.run("start_prim")).ok:
            await self.stop(force=True, reason="start_prim failed")
            return
        self.set_state(State.ALONE, Status.READY)

    async def stop(self, force: bool = False, reason: str = "") -> None:
        if self._stopping:
            return
        self._stopping = True
        if reason:
            self.log(Level.CRITICAL, "module", f"Stopping module: {reason}")
        self.set_state(State.STOP, Status.TRANSIENT)
        args = ("force",) if force else ()
        await self.scripts.run("stop_prim", *args)
        await self.scripts.run("poststop", *args)
        self.set_state(State.STOP, Status.NOT_READY)
        self.stopped.set()

    async def handle(self, op: str, args: dict[str, Any], user: str) -> Any:
        if op == "state":
            res = {r.name: r.value for r in self.store.resources("module.")}
            return {"state": res.get("module.state"), "status": res.get("module.status")}
        if op == "stop":
            self.log(Level.USER, "module", f"Action stop requested by {user}")
            await self.stop(force=bool(args.get("force")))
            return None
        raise HakitError(f"unknown module request '{op}'")


async def _main(name: str) -> int:
    p = paths()
    mod = ModuleProcess(name, p)
    server = await ipc.serve(p.module_socket(name), mod.handle)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(mod.stop()))
    try:
        try:
            await mod.start()
        except HakitError as exc:
            mod.log(Level.CRITICAL, "module", str(exc))
            mod.set_state(State.STOP, Status.NOT_READY)
            print(f"hakit module {name}: {exc}", file=sys.stderr)
            return 1
        await mod.stopped.wait()
        return 0
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            p.module_socket(name).unlink()
        mod.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="hakit-module")
    parser.add_argument("module")
    args = parser.parse_args()
    import uvloop

    sys.exit(uvloop.run(_main(args.module)))


if __name__ == "__main__":
    main()
