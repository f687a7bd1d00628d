"""hakitd: the per-node daemon.

Answers the CLI on /run/hakit/hakitd.sock and supervises one process per started
module, so that a crash of one module never takes another down: an unexpected
death is logged as critical and the module is restarted, at most RESPAWN_MAX
times per RESPAWN_WINDOW_S, then left stopped.  A mirror primary's new process
takes over what the dead one ran (--resume: its application, VIP and hakit-rfs went
on meanwhile); any other is restarted afresh after the crash cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakit import __version__, ipc
from hakit.child import python_argv
from hakit.errors import HakitError
from hakit.files import open_private_append
from hakit.module.catalog import Catalog
from hakit.module.states import RESUME_REFUSED
from hakit.node import boot as node_boot
from hakit.node import remote_ops
from hakit.node.notify import notify
from hakit.node.rpc import RpcServer
from hakit.node.web import reads
from hakit.node.web.server import WebService, install_users
from hakit.paths import ROOT_ENV, Paths, paths
from hakit.store.module_store import Level, ModuleStore

START_TIMEOUT_S = 600.0
NO_ANSWER_S = 30.0  # a module process silent this long: `hakit start` says what is known
RESPAWN_MAX = 3
RESPAWN_WINDOW_S = 600.0
SELF = "hakitd"  # the user of the requests hakitd makes itself
STARTING_COMMANDS = ("prim", "primforce", "second")
# (UP NotReady: a farm node whose filter is missing, out of the membership until it is back.)
# What a dead module process may be resumed in: a mirror primary serving (docs/architecture.md).
RESUMABLE = {("ALONE", "Ready"), ("PRIM", "Ready")}
STABLE = {("STOP", "NotReady"), ("ALONE", "Ready"), ("PRIM", "Ready"), ("SECOND", "Ready"),
          ("UP", "Ready"), ("UP", "NotReady"), ("WAIT", "NotReady")}


@dataclass
class Supervised:
    name: str
    proc: asyncio.subprocess.Process
    wanted: bool = True  # False once a stop was asked: its exit is then expected
    respawns: list[float] = field(default_factory=list)
    watcher: asyncio.Task[None] | None = None
    resuming: bool = False  # started with --resume: RESUME_REFUSED means "clean up and start"


class Daemon:
    def __init__(self, p: Paths) -> None:
        self.paths = p
        self.catalog = Catalog(p)
        self.modules: dict[str, Supervised] = {}
        self.started_at = time.time()
        self.done = asyncio.Event()
        self.booting: list[asyncio.Task[None]] = []
        self.web = WebService(p)

    def module_log(self, name: str, level: Level, message: str) -> None:
        with ModuleStore(self.paths.module_db(name)) as store:
            store.log(level, "hakitd", message)

    def last_critical(self, name: str, since: float) -> str:
        with ModuleStore(self.paths.module_db(name)) as store:
            lines = store.logs({Level.CRITICAL}, limit=5)
        # hakitd's own line about the exit may already be there: the module's reason is older.
        reasons = [ln.message for ln in lines if ln.at >= since and ln.source != "hakitd"]
        return reasons[-1] if reasons else "it exited without a reason"

    async def handle(self, op: str, args: dict[str, Any], user: str) -> Any:
        if op == "ping":
            return {
                "version": __version__,
                "node": os.environ.get("HAKIT_NODE") or socket.gethostname(),
                "pid": os.getpid(),
                "uptime": time.time() - self.started_at,
                "modules": sorted(self.modules),
            }
        if op == "boot":
            return self.boot_setting(str(args.get("module", "")), str(args.get("value", "status")), user)
        if op == "shutdown":
            return await self.stop_all(user)
        if op in ("start", "stop", "command"):
            name = str(args.get("module", ""))
            self.catalog.require(name)
            if op == "start":
                return await self.start(name, user)
            if op == "stop":
                return await self.stop(name, user, bool(args.get("force")))
            return await self.command(name, str(args.get("verb", "")), user, bool(args.get("fullsync")))
        # Asked by other nodes over RPC (hakit -H ...): see node/remote_ops.py.
        if op == "cli":
            return await remote_ops.run_cli(args, user)
        if op == "apply_cluster":
            done = remote_ops.apply_cluster(self.paths, args, user)
            await self.web.reload()
            return done
        if op == "apply_module":
            return remote_ops.apply_module(self.paths, args, running=str(args.get("module")) in self.modules)
        if op == "module_state":
            return remote_ops.module_state(self.paths, args)
        if op == "web_reload":
            await self.web.reload()
            return {}
        if op == "web_users":
            return install_users(self.paths, args)
        if op == "web_read":
            return await asyncio.to_thread(reads.read, self.paths, args)
        raise HakitError(f"unknown request '{op}'")

    async def spawn(self, name: str, intent: str | None = None, cleanup: bool = False,
                    fullsync: bool = False, resume: bool = False) -> asyncio.subprocess.Process:
        logfile = self.paths.module_log(name) / "module.out"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open_private_append(logfile) as out:
            return await asyncio.create_subprocess_exec(
                *python_argv("hakit.module.process", name,
                             *(("--intent", intent) if intent else ()), *(("--cleanup",) if cleanup else ()),
                             *(("--fullsync",) if fullsync else ()), *(("--resume",) if resume else ())),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            )

    async def start(self, name: str, user: str, intent: str | None = None,
                    fullsync: bool = False) -> dict[str, Any]:
        if name in self.modules:
            raise HakitError(f"module {name} is already started")
        self.catalog.config(name)  # refuse now, with the file's problems, if it no longer reads
        action = f"{intent or 'start'}{' fullsync' if fullsync else ''}"
        self.module_log(name, Level.USER, f"Action {action} requested by {user}")
        self.running_marker(name).touch()
        sup = Supervised(name, await self.spawn(name, intent, fullsync=fullsync))
        self.supervise(sup)
        return await self.wait_stable(sup)

    async def command(self, name: str, verb: str, user: str, fullsync: bool = False) -> dict[str, Any]:
        """prim, second, swap, restart, ...: a stopped module starts with that intent
        (second fullsync: as secondary, synchronised fully)."""
        if name not in self.modules:
            if verb in STARTING_COMMANDS:
                return await self.start(name, user, intent=verb, fullsync=fullsync)
            raise HakitError(f"module {name} is not started on this node")
        return dict(await ipc.acall(self.paths.module_socket(name), "command",
                                    {"verb": verb, "fullsync": fullsync}, timeout=START_TIMEOUT_S))

    async def wait_stable(self, sup: Supervised) -> dict[str, Any]:
        """The state the module reached; what it last said (or its store says), with a
        note, once its process has answered nothing for NO_ANSWER_S: a busy module must
        not keep `hakit start` waiting without a word."""
        deadline = time.monotonic() + START_TIMEOUT_S
        began = time.time()
        answered = time.monotonic()
        known: dict[str, Any] | None = None
        sock = self.paths.module_socket(sup.name)
        while time.monotonic() < deadline:
            if sup.proc.returncode is not None:
                raise HakitError(f"module {sup.name} did not start: {self.last_critical(sup.name, began)} "
                                 f"(see 'hakit logview -m {sup.name}')")
            try:
                state = await ipc.acall(sock, "state", timeout=2.0)
            except (HakitError, OSError, TimeoutError):
                if time.monotonic() - answered > NO_ANSWER_S:
                    with ModuleStore(self.paths.module_db(sup.name)) as store:
                        stored = store.state() or ("STOP", "Transient")
                    said = known or {"state": stored[0], "status": stored[1]}
                    return {**said, "note": f"its process has not answered for {NO_ANSWER_S:g} s: "
                                            f"'hakit state -m {sup.name}' tells what it reaches"}
            else:
                answered, known = time.monotonic(), dict(state)
                if (state.get("state"), state.get("status")) in STABLE:
                    return known
            await asyncio.sleep(0.1)
        raise HakitError(f"module {sup.name} is still starting after {START_TIMEOUT_S:g} s")

    async def stop(self, name: str, user: str, force: bool) -> dict[str, Any]:
        sup = self.modules.get(name)
        if sup is None:
            raise HakitError(f"module {name} is not started")
        sup.wanted = False
        if user != SELF:
            # An operator's stop: boot="auto" must not start it again at the next boot.
            self.running_marker(name).unlink(missing_ok=True)
        try:
            await ipc.acall(self.paths.module_socket(name), "stop", {"force": force},
                            timeout=START_TIMEOUT_S)
        except HakitError:
            # Not answering: it cannot run its stop scripts, so end it.
            with contextlib.suppress(ProcessLookupError):
                sup.proc.terminate()
        await sup.proc.wait()
        return {"state": "STOP", "status": "NotReady"}

    async def watch(self, sup: Supervised) -> None:
        code = await sup.proc.wait()
        if self.modules.get(sup.name) is not sup:
            return
        del self.modules[sup.name]
        if not sup.wanted or code == 0 or self.done.is_set():
            return
        now = time.time()
        recent = [t for t in sup.respawns if now - t < RESPAWN_WINDOW_S]
        if code == RESUME_REFUSED and sup.resuming:
            # The new process could not take over (it said why): as after any crash.
            await self.cleanup(sup.name, None)
            self.supervise(Supervised(sup.name, await self.spawn(sup.name), respawns=sup.respawns))
            return
        if code != 1 and len(recent) < RESPAWN_MAX and self.resumable(sup.name):
            # The application, its VIP and its hakit-rfs go on: the peer, which still
            # hears the replication stream, waits for the new process (docs/engine.md).
            self.module_log(sup.name, Level.CRITICAL, f"Module process died (code {code}); "
                            "a new one takes over what it ran")
            self.supervise(Supervised(sup.name, await self.spawn(sup.name, resume=True),
                                      respawns=[*recent, now], resuming=True))
            return
        if code != 1:
            # It died in some state: what that state started (application, VIP, replication)
            # may still run.  Stop it before anything else, or a respawned module waiting
            # as secondary could sit beside a primary application nobody controls.
            await self.cleanup(sup.name, code)
        if len(recent) >= RESPAWN_MAX or code == 1:
            # Exit code 1 is the module refusing to start; respawning would loop.
            self.module_log(sup.name, Level.CRITICAL,
                            f"Module process exited with code {code}; module left stopped")
            return
        self.module_log(sup.name, Level.CRITICAL,
                        f"Restarting the module after its process died (code {code})")
        self.supervise(Supervised(sup.name, await self.spawn(sup.name), respawns=[*recent, now]))

    def resumable(self, name: str) -> bool:
        """Whether a new process may take over what the dead one ran: a mirror primary
        that was serving (not between two states)."""
        try:
            if self.catalog.config(name).service.mode != "mirror":
                return False
        except HakitError:
            return False
        with ModuleStore(self.paths.module_db(name)) as store:
            return store.state() in RESUMABLE

    async def cleanup(self, name: str, code: int | None) -> None:
        if code is not None:
            self.module_log(name, Level.CRITICAL, f"Module process died (code {code}); stopping what it ran")
        proc = await self.spawn(name, cleanup=True)
        try:
            await asyncio.wait_for(proc.wait(), START_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def supervise(self, sup: Supervised) -> None:
        self.modules[sup.name] = sup
        sup.watcher = asyncio.create_task(self.watch(sup))

    async def shutdown(self) -> None:
        self.done.set()
        await self.stop_all(SELF)

    async def stop_all(self, user: str) -> dict[str, Any]:
        """Stop every module as at the node's shutdown: a mirror primary hands over, and
        boot="auto" starts again at the next boot what ran (`hakit shutdown`)."""
        if user != SELF:
            for name in self.modules:
                self.module_log(name, Level.USER, f"Action shutdown requested by {user}")
        stopped, failed = [], {}
        for name in list(self.modules):
            try:
                await self.stop(name, SELF, force=False)
                stopped.append(name)
            except HakitError as exc:
                failed[name] = str(exc)
        return {"stopped": stopped, "failed": failed}

    def boot_setting(self, name: str, value: str, user: str) -> dict[str, Any]:
        """`hakit boot -m AM on|off|status`: the node's own choice, under boot="ignore"."""
        self.catalog.require(name)
        configured = self.catalog.config(name).service.boot
        if value != "status":
            node_boot.set_setting(self.paths, name, value)
            self.module_log(name, Level.USER, f"Action boot {value} requested by {user}")
        node_setting = node_boot.setting(self.paths, name)
        choice = node_boot.effective(configured, node_setting)
        self.set_resource(name, "usersetting.boot", choice)
        return {"boot": choice, "configured": configured, "setting": node_setting}

    def set_resource(self, name: str, resource: str, value: str) -> None:
        with ModuleStore(self.paths.module_db(name)) as store:
            store.set_resource(resource, value)

    def forget_stale_states(self) -> None:
        """No module process survives hakitd: a state left by a crash or a reboot is stale."""
        for name in self.catalog.names():
            with ModuleStore(self.paths.module_db(name)) as store:
                state = store.resource("module.state")
                if state is not None and state.value != "STOP":
                    store.log(Level.EVENT, SELF, f"Module was {state.value} when its node or hakitd stopped")
                    store.set_resource("module.state", "STOP")
                    store.set_resource("module.status", "NotReady")

    def running_marker(self, name: str) -> Path:
        return self.paths.module_var(name) / "running"

    async def boot(self) -> None:
        """Start the modules configured with boot="on", and boot="auto" ones that ran before."""
        for name in self.catalog.names():
            try:
                svc = self.catalog.config(name).service
            except HakitError as exc:
                self.module_log(name, Level.CRITICAL, f"Not started at boot: {exc}")
                continue
            setting = node_boot.setting(self.paths, name)
            self.set_resource(name, "usersetting.boot", node_boot.effective(svc.boot, setting))
            if node_boot.starts(svc.boot, setting, self.running_marker(name).exists()):
                self.booting.append(asyncio.create_task(self._boot_one(name, svc.boot_delay)))

    async def _boot_one(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.start(name, "boot")
        except HakitError as exc:
            self.module_log(name, Level.CRITICAL, f"Start at boot failed: {exc}")


async def _main() -> int:
    # Nothing of where it was started from stays with it or its children (a directory
    # a user can write to, or one that may be unmounted); a relative root is kept.
    if os.environ.get(ROOT_ENV):
        os.environ[ROOT_ENV] = os.path.abspath(os.environ[ROOT_ENV])
    os.chdir("/")
    p = paths()
    p.ensure()
    if p.daemon_socket.exists():
        with contextlib.suppress(HakitError):
            ipc.call(p.daemon_socket, "ping", timeout=2.0)
            print(f"hakitd: already running (socket {p.daemon_socket})", file=sys.stderr)
            return 1
    daemon = Daemon(p)
    daemon.forget_stale_states()
    # Other nodes' requests go through the RPC listener, which also re-reads its credentials
    # and addresses when asked (rpc_reload) or after an applied cluster.xml.
    rpc = RpcServer(p, daemon.handle)
    server = await ipc.serve(p.daemon_socket, rpc.handle)
    await rpc.reload()
    await daemon.web.reload()
    p.daemon_pidfile.write_text(f"{os.getpid()}\n")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"hakitd {__version__} listening on {p.daemon_socket}", flush=True)
    notify("READY=1")
    await daemon.boot()
    await stop.wait()
    notify("STOPPING=1")
    server.close()
    rpc.close()
    await daemon.web.close()
    await daemon.shutdown()
    for f in (p.daemon_socket, p.daemon_pidfile):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    return 0


def main() -> None:
    import uvloop

    sys.exit(uvloop.run(_main()))


if __name__ == "__main__":
    main()
