"""The module's state automaton: the core every mode shares, and the driver its mode
needs (driver.py; a mirror's, a farm's or a light module's).

One task owns every transition.  Operator commands, failover actions and peer news
are queued to it; after each it reconciles: it compares what it sees (the peer's
state from the heartbeats, the wait and prim rules that hold, the intent given by
`prim`/`second`) with the current state and takes the next transition.
Transitions run the module's scripts; nothing else runs while one is in progress,
so two transitions never interleave.

The core holds what does not depend on the mode: that queue and its task, the state
and its advertisement in the heartbeats, the scripts and checkers of each role (prim,
second, both) and the VIP of a primary, the wait rules, the maxloop budget, and the
commands every mode has (restart, stopstart, stop).  The driver decides the rest:
which transition comes next, what runs in each state, the mode's own commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakit.check.registry import Checks
from hakit.check.splitbrain import Witness
from hakit.config.module_model import ModuleConfig
from hakit.config.rules import Rule
from hakit.errors import HakitError
from hakit.heart.link import Heart
from hakit.module.driver import Driver, StartFailed
from hakit.module.failover import FailoverMachine, LoopBudget
from hakit.module.farm_driver import FarmDriver
from hakit.module.light_driver import LightDriver
from hakit.module.mirror_driver import MirrorDriver
from hakit.module.news import News
from hakit.module.scripts import ScriptRunner
from hakit.module.states import RUNNING, State, Status
from hakit.rfs.mirror import Replication
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.store.module_store import Level
from hakit.vip.alias import MirrorVip
from hakit.vip.farm import FarmVip

# The commands whose meaning depends on the mode: its driver's.
MODE_COMMANDS = ("prim", "primforce", "second", "swap")


@dataclass
class Parts:
    """What the automaton drives; built by the module process."""

    name: str
    node: str
    mode: str
    config: ModuleConfig
    resources: Resources
    log: ModuleLog
    scripts: ScriptRunner
    checks: Checks
    heart: Heart | None
    peers: list[str]
    vip: MirrorVip | None
    witness: Witness | None
    datastate_path: Path
    rfs: Replication | None = None
    peer_addr: str | None = None  # the peer's address on the replication LAN
    farm: FarmVip | None = None


Job = Callable[[], Awaitable[Any]]


class Automaton:
    def __init__(self, parts: Parts, rules: list[Rule], intent: str | None, fullsync: bool = False) -> None:
        self.p = parts
        self.name = parts.name
        self.log = parts.log
        # Starting: not the STOP (NotReady) it ends in, which `hakit start` would take for
        # the state reached.
        self.state = State.STOP
        self.status = Status.TRANSIENT
        svc = parts.config.service
        self.budget = LoopBudget(svc.maxloop, svc.loop_interval)
        self.failover = FailoverMachine(rules, parts.resources, self._rule_fired, self.wake)
        self.jobs: asyncio.Queue[tuple[Job, asyncio.Future[Any] | None]] = asyncio.Queue()
        self._wakeup = asyncio.Event()
        self.stopped = asyncio.Event()
        # The one place that reads the mode: whatever differs by mode is its driver's.
        # (intent and fullsync, from `hakit prim|second` on a stopped module: a mirror's.)
        self.driver: Driver = (
            MirrorDriver(self, intent, fullsync) if parts.mode == "mirror"
            else FarmDriver(self) if parts.mode == "farm" else LightDriver(self))

    # -- outside world
    def wake(self) -> None:
        self._wakeup.set()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.jobs.put_nowait((job, fut))
        self.wake()
        return fut

    def set_state(self, state: State, status: Status) -> None:
        if (state, status) == (self.state, self.status):
            return
        self.state, self.status = state, status
        res = self.p.resources
        changed = res.set("module.state", str(state))
        changed |= res.set("module.status", str(status))
        if changed:
            self.log(Level.EVENT, "module", f"Module state {state} ({status})")
        self.advertise()

    def advertise(self) -> None:
        if self.p.heart is not None:
            self.p.heart.update(self.payload())

    def news(self) -> News:
        """What the peers are told: state, status, the copy of the data, and the mode's."""
        data = self.driver.data
        return self.driver.news(News(state=self.state, status=self.status, role=data.role, gen=data.gen,
                                     base=data.base))

    def payload(self) -> dict[str, Any]:
        """news() as the heart sends it."""
        return self.news().to_wire()

    def queue_automatic(self, action: str, origin: str) -> None:
        """An action asked by a rule or a checker: run in turn, against the maxloop budget."""
        self.jobs.put_nowait((lambda: self.automatic(action, origin), None))
        self.wake()

    def _rule_fired(self, rule: Rule) -> None:
        self.log(Level.EVENT, "failover", f"Rule {rule.label} true: action {rule.action}")
        self.queue_automatic(rule.action, f"rule {rule.label}")

    # -- the parts' events the module process wires here: the driver's
    def check_fence(self) -> None:
        self.driver.check_fence()

    def stream_lost(self) -> None:
        self.driver.stream_lost()

    def rfs_died(self, role: str) -> None:
        self.driver.rfs_died(role)

    # -- main loop
    async def resume(self) -> str | None:
        """In place of a module process that died: take over what it ran, in the state
        it left in the store (None), or say why not, with nothing changed."""
        state = self.p.resources.get("module.state") or ""
        status = self.p.resources.get("module.status") or ""
        if state not in State.__members__ or status not in {str(s) for s in Status}:
            return "no state left by the previous module process"
        why = await self.driver.resume(State(state), Status(status))
        if why is None:
            self.log(Level.CRITICAL, "module", f"Resumed in place of the module process that died in "
                     f"{state} ({status}): what it ran goes on")
            self.failover.evaluate()
            self.wake()
        return why

    async def run(self, resumed: bool = False) -> None:
        try:
            if not resumed:
                await self.begin()
        except StartFailed as exc:
            await self.finish(force=True, reason=str(exc))
            return
        while not self.stopped.is_set():
            await self._wakeup.wait()
            self._wakeup.clear()
            while not self.jobs.empty() and not self.stopped.is_set():
                job, fut = self.jobs.get_nowait()
                try:
                    result = await job()
                except StartFailed as exc:
                    if fut is not None and not fut.done():
                        fut.set_exception(HakitError(str(exc)))
                    await self.finish(force=True, reason=str(exc))
                    break
                except HakitError as exc:
                    if fut is None:
                        self.log(Level.CRITICAL, "module", str(exc))
                    elif not fut.done():
                        fut.set_exception(exc)
                    continue
                if fut is not None and not fut.done():
                    fut.set_result(result)
            if self.stopped.is_set():
                break
            try:
                await self.reconcile()
            except StartFailed as exc:
                await self.finish(force=True, reason=str(exc))
        # Commands queued behind a stop get the final state.
        while not self.jobs.empty():
            _, fut = self.jobs.get_nowait()
            if fut is not None and not fut.done():
                fut.set_exception(HakitError(f"module {self.name} stopped"))

    async def begin(self) -> None:
        self.set_state(State.WAIT, Status.TRANSIENT)
        if self.p.vip is not None:
            await self.p.vip.clear_stale()
        await self.enable("pre")
        await self.script("prestart")
        self.failover.evaluate()
        self.wake()

    # -- scripts and checkers
    async def enable(self, klass: str) -> None:
        try:
            await self.p.checks.enable(klass)
        except HakitError as exc:
            raise StartFailed(str(exc)) from None

    async def script(self, script: str, *args: str, fatal: bool = True) -> None:
        result = await self.p.scripts.run(script, *args)
        if not result.ok and fatal:
            raise StartFailed(f"{script} failed")

    async def stop_script(self, script: str, force: bool) -> None:
        """A stop script (stop_*, poststop): its failure stops nothing else."""
        await self.script(script, *(("force",) if force else ()), fatal=False)

    async def start_role(self, klass: str) -> None:
        """The application in a role (prim, second, both): its start script, its checkers."""
        await self.script(f"start_{klass}")
        await self.enable(klass)

    async def stop_role(self, klass: str, force: bool = False) -> None:
        await self.p.checks.disable(klass)
        await self.stop_script(f"stop_{klass}", force)

    # -- the primary's application (mirror, light)
    async def start_primary(self) -> None:
        """Become ALONE: the VIP taken, then start_prim; the transition so far Transient."""
        if self.p.vip is not None:
            await self.p.vip.take()
        self.set_state(State.ALONE, Status.TRANSIENT)
        await self.start_role("prim")
        self.set_state(State.ALONE, Status.READY)
        self.wake()  # the peer may already be waiting to become secondary

    async def restart_primary(self) -> None:
        state = self.state
        if self.p.vip is not None:
            await self.p.vip.take()
        await self.start_role("prim")
        self.set_state(state, Status.READY)

    async def stop_primary(self, force: bool) -> None:
        await self.stop_role("prim", force)
        if self.p.vip is not None:
            await self.p.vip.release()

    # -- reconciliation
    async def reconcile(self) -> None:
        before = (self.state, self.status, self.driver.data.role)
        await self._reconcile()
        if (self.state, self.status, self.driver.data.role) != before:
            self.wake()  # one transition may enable the next (WAIT after giving way -> SECOND)

    async def _reconcile(self) -> None:
        if self.state == State.STOP:
            return
        waits = self.failover.holding("wait")
        if waits:
            if self.state != State.WAIT:
                await self.to_wait(f"rule {waits[0].label}")
            self.set_state(State.WAIT, Status.NOT_READY)
            return
        await self.driver.reconcile()

    async def stop_application(self, force: bool = False, replication: bool = True) -> None:
        """Stop what the current state started (scripts, checkers, VIP, and unless told
        otherwise the replication: a restart in place keeps it)."""
        await self.driver.stop_application(force, replication)

    async def to_wait(self, reason: str) -> None:
        self.log(Level.EVENT, "module", f"Going to WAIT: {reason}")
        self.set_state(self.state, Status.TRANSIENT)
        await self.stop_application()
        self.driver.stopped_for_wait()
        self.set_state(State.WAIT, Status.NOT_READY)

    async def finish(self, force: bool = False, reason: str = "") -> None:
        """Stop the module: application, checkers, poststop; then the process ends."""
        if self.stopped.is_set():
            return
        if reason:
            self.log(Level.CRITICAL, "module", f"Stopping module: {reason}")
        self.set_state(self.state, Status.TRANSIENT)
        await self.stop_application(force)
        await self.driver.release()
        await self.p.checks.stop_all()
        await self.stop_script("poststop", force)
        self.set_state(State.STOP, Status.NOT_READY)
        self.stopped.set()

    # -- actions
    async def automatic(self, action: str, origin: str) -> None:
        """An action the failover machine or errd asked for: it spends maxloop budget."""
        if self.state == State.STOP:
            return
        if action in ("restart", "stopstart", "wait") and not self.budget.spend():
            await self.finish(reason=f"maxloop reached ({self.budget.maxloop} automatic actions "
                                     f"within {self.budget.interval:g} s; last: {action} by {origin})")
            return
        await self.act(action, origin)

    async def act(self, action: str, origin: str) -> None:
        self.log(Level.EVENT, "module", f"Action {action} from {origin}")
        if action == "stop":
            await self.finish(reason=f"stop by {origin}")
        elif action == "restart":
            await self.restart()
        elif action == "stopstart":
            await self.stopstart()
        elif action == "swap":
            await self.driver.command("swap", False)
        elif action == "prim":
            self.wake()
        elif action == "wait":
            self.wake()  # the rule holds: reconcile moves to WAIT
        else:
            raise HakitError(f"unknown action {action}")

    async def restart(self) -> None:
        state = self.state
        if state not in RUNNING:
            raise HakitError(f"module {self.name} is {state}: nothing runs to restart")
        self.set_state(state, Status.TRANSIENT)
        await self.stop_application(replication=False)
        await self.driver.restart()

    async def stopstart(self) -> None:
        self.set_state(self.state, Status.TRANSIENT)
        await self.stop_application()
        await self.p.checks.disable("pre")
        await self.stop_script("poststop", False)
        self.set_state(State.STOP, Status.TRANSIENT)
        if self.p.heart is not None and self.p.peers:
            # Let the secondary see this node stopped before it comes back waiting.
            await asyncio.sleep(self.p.heart.pulse * 2)
        await self.begin()

    # -- operator commands (run as jobs)
    async def command(self, verb: str, fullsync: bool = False) -> dict[str, str]:
        if verb in MODE_COMMANDS:
            await self.driver.command(verb, fullsync)
        elif verb == "restart":
            await self.restart()
        elif verb == "stopstart":
            await self.stopstart()
        else:
            raise HakitError(f"unknown command {verb}")
        return self.summary()

    async def update(self, farm_config: Any) -> dict[str, str]:
        """`hakit update` (a farm's)."""
        await self.driver.update(farm_config)
        return self.summary()

    def summary(self) -> dict[str, str]:
        return {"state": str(self.state), "status": str(self.status)}
