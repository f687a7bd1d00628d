"""The module's state automaton: mirror (STOP, WAIT, ALONE, PRIM, SECOND), farm
(STOP, WAIT, UP) and light (STOP, WAIT, ALONE).

One task owns every transition.  Operator commands, failover actions and peer
news are queued to it; after each it reconciles: it compares what it sees (the
peer's state from the heartbeats, the wait and prim rules that hold, the intent
given by `prim`/`second`) with the current state and takes the next transition.
Transitions run the module's scripts; nothing else runs while one is in progress,
so two transitions never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from hakit.check.registry import Checks
from hakit.check.splitbrain import Witness
from hakit.config.module_model import ModuleConfig
from hakit.config.rules import Rule
from hakit.errors import HakitError
from hakit.heart.link import Heart
from hakit.module.datastate import NOT_A_GOOD_COPY, DataState
from hakit.module.failover import FailoverMachine, LoopBudget
from hakit.module.scripts import ScriptRunner
from hakit.rfs.mirror import Replication
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.store.module_store import Level
from hakit.vip.alias import MirrorVip
from hakit.vip.farm import FarmVip

WITNESS_TIMEOUT_S = 1.0
# A failed synchronisation of the secondary is tried again after 1, 2, 4, 8, 10, 10... s.
SYNC_BACKOFF_MAX_S = 10.0


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


PRIMARY = (State.ALONE, State.PRIM)


class StartFailed(HakitError):
    """A start script failed: the module stops instead of running half started."""


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
        self.intent = intent  # prim, primforce, second: an operator's choice still to honour
        self.fullsync_asked = fullsync  # second fullsync: until this node is synchronised
        svc = parts.config.service
        self.budget = LoopBudget(svc.maxloop, svc.loop_interval)
        self.data = DataState.load(parts.datastate_path) if parts.mode == "mirror" else DataState()
        self.failover = FailoverMachine(rules, parts.resources, self._rule_fired, self.wake)
        self.primary_since = 0.0
        self.yielding = False  # swap: this primary handed over and waits to become secondary
        self.swap_asked = False  # swap asked on the secondary, carried to the primary by heartbeat
        self.jobs: asyncio.Queue[tuple[Job, asyncio.Future[Any] | None]] = asyncio.Queue()
        self._wakeup = asyncio.Event()
        self.stopped = asyncio.Event()
        self._waiting_logged = ""
        self.synced_epoch = 0  # primary: the secondary receivers it synchronised last
        self.sync_task: asyncio.Task[None] | None = None
        self.attached = False  # primary: its streams are (being) attached to the secondary
        # Primary, the stream lost: the secondary receivers (epoch) told their copy is
        # outdated, until a synchronisation succeeds; and whether hakit-rfs still holds
        # the writes that would be acknowledged without them (docs/replication.md).
        self.outdating = 0
        self.fence_pending = False
        self.sync_backoff = 0.0
        self.sync_retry_at = 0.0
        self.leaving = False  # secondary: stopping its replication, it will not take over
        self.dead_epoch = 0  # secondary: receivers that died; the primary's word on them is stale
        self._fencing: asyncio.Task[None] | None = None

    # -- outside world
    def wake(self) -> None:
        self._wakeup.set()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.jobs.put_nowait((job, fut))
        self.wake()
        return fut

    def peer(self) -> dict[str, Any] | None:
        if self.p.heart is None or not self.p.peers:
            return None
        return self.p.heart.peer(self.p.peers[0])

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

    def payload(self) -> dict[str, Any]:
        return {
            "state": str(self.state), "status": str(self.status), "role": self.data.role,
            "gen": self.data.gen, "since": self.primary_since, "yield": self.yielding,
            "swap": self.swap_asked, "rfs_epoch": self.p.rfs.epoch if self.p.rfs else 0,
            "synced": self.synced_epoch, "base": self.data.base, "fullsync": self.fullsync_asked,
            "outdate": self.outdating, "leaving": self.leaving,
            "sync": self.p.rfs.progress if self.p.rfs else {},
            **({"lb": self.p.farm.payload()} if self.p.farm else {}),
        }

    def _save_data(self, role: str, gen: int | None = None, base: int | None = None) -> None:
        if self.p.mode != "mirror":
            return
        self.data.role = role
        if gen is not None:
            self.data.gen = gen
        if base is not None:
            self.data.base = base
        self.data.save(self.p.datastate_path)
        self.advertise()

    def queue_automatic(self, action: str, origin: str) -> None:
        """An action asked by a rule or a checker: run in turn, against the maxloop budget."""
        self.jobs.put_nowait((lambda: self.automatic(action, origin), None))
        self.wake()

    def _rule_fired(self, rule: Rule) -> None:
        self.log(Level.EVENT, "failover", f"Rule {rule.label} true: action {rule.action}")
        self.queue_automatic(rule.action, f"rule {rule.label}")

    # -- main loop
    async def run(self) -> None:
        try:
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
        await self._enable("pre")
        await self._script("prestart")
        self.failover.evaluate()
        self.wake()

    async def _enable(self, klass: str) -> None:
        try:
            await self.p.checks.enable(klass)
        except HakitError as exc:
            raise StartFailed(str(exc)) from None

    async def _script(self, script: str, *args: str, fatal: bool = True) -> None:
        result = await self.p.scripts.run(script, *args)
        if not result.ok and fatal:
            raise StartFailed(f"{script} failed")

    # -- reconciliation
    async def reconcile(self) -> None:
        before = (self.state, self.status, self.data.role)
        await self._reconcile()
        if (self.state, self.status, self.data.role) != before:
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
        if self.p.mode == "farm":
            if self.state == State.WAIT:
                await self.start_farm()
            elif self.state == State.UP and self.status != Status.TRANSIENT:
                self.set_state(State.UP, self._up_status())
            return
        if self.p.mode == "light":
            if self.state == State.WAIT:
                await self.to_primary()
            return
        await self.reconcile_mirror()

    async def reconcile_mirror(self) -> None:
        peer = self.peer()
        pstate = peer.get("state") if peer else None
        if self.state == State.WAIT:
            await self._from_wait(peer)
        elif self.state == State.SECOND:
            rfs = self.p.rfs
            if (rfs is not None and peer is not None and rfs.epoch and peer.get("outdate") == rfs.epoch
                    and self.data.role == "second"):
                self._outdate(f"{self.p.peers[0]} lost the replication stream to this node and goes on "
                              "without it")
            if rfs is not None and peer is not None and self.status != Status.READY:
                rfs.show_peer_progress(peer.get("sync") or {})
            if (self.status != Status.READY and not self.yielding and peer is not None
                    and pstate in PRIMARY and self._synced_by(peer)):
                await self.second_ready(peer, running=self.status == Status.NOT_READY)
                return
            if self.yielding:
                if pstate in PRIMARY and peer and peer.get("status") == Status.READY:
                    await self.to_second(peer)
                elif peer is None and await self._witness_allows():
                    self.yielding = False
                    await self.to_primary()
                return
            gone = peer is None and self.failover.holding("prim")
            left = peer is not None and (
                pstate in (State.STOP, State.WAIT) or (pstate == State.SECOND and peer.get("yield")))
            if (gone or left) and self.data.role in NOT_A_GOOD_COPY:
                await self.to_wait(f"{self.p.peers[0]} is gone before this copy was synchronised: "
                                   "it is inconsistent (primforce decides)")
            elif gone and await self._witness_allows():
                self.log(Level.EVENT, "module", f"Peer {self.p.peers[0]} lost: taking over")
                await self.to_primary()
            elif left:
                self.log(Level.EVENT, "module", f"Peer {self.p.peers[0]} is {pstate}: taking over")
                await self.to_primary()
        elif self.state in PRIMARY:
            await self._fence(peer)
            if peer is None:
                if self.state == State.PRIM and not await self._witness_allows():
                    return
                await self._alone()
            elif pstate in PRIMARY:
                await self._split_brain_healed(peer)
            elif pstate == State.SECOND and peer.get("status") != Status.READY and not peer.get("yield"):
                if self.state == State.PRIM and self.status == Status.READY:
                    self._unprotected(f"{self.p.peers[0]} is SECOND ({peer.get('status')})")
                if not self.fence_pending:
                    self._start_sync(peer)
            elif pstate == State.SECOND and peer.get("status") == Status.READY and not peer.get("yield"):
                if self.state == State.ALONE and not self.outdating:
                    self.set_state(State.PRIM, Status.READY)
                if peer.get("swap") or self._defaultprim_is_peer():
                    why = "asked by the secondary" if peer.get("swap") else "the peer is the default primary"
                    self.log(Level.EVENT, "module", f"Swap: {why}")
                    await self.hand_over()
            elif self.state == State.PRIM:
                await self._alone()

    async def _from_wait(self, peer: dict[str, Any] | None) -> None:
        pstate = peer.get("state") if peer else None
        if peer is not None and pstate in PRIMARY and not peer.get("yield"):
            if self.intent in ("prim", "primforce"):
                self.log(Level.CRITICAL, "module", f"{self.intent} dropped: {self.p.peers[0]} is {pstate}")
            self.intent = None
            await self.to_second(peer)
            return
        if self.intent in ("prim", "primforce"):
            self.intent = None
            await self.to_primary()
            return
        if self.intent == "second":
            self._waiting("waiting for a primary (started as secondary)")
            return
        if peer is not None and pstate == State.WAIT:
            winner = self._elect_at_start(peer)
            if winner is True:
                await self.to_primary()
            elif winner is None:
                self._waiting("both nodes wait: neither copy is known to be the newest; "
                              "choose with 'hakit prim -m {m}' on the node holding the reference data")
            else:
                self._waiting(f"waiting for {self.p.peers[0]} to become primary")
            return
        heart = self.p.heart
        if peer is None and heart is not None and heart.settled() and self.failover.holding("prim"):
            if self.data.role == "prim":
                await self.to_primary()
            else:
                why = self.data.prim_refusal() or "this module never ran as primary here"
                self._waiting(f"peer absent and {why}; 'hakit prim -m {{m}}' decides")
            return
        if peer is not None and pstate == State.SECOND:
            self._waiting(f"waiting: {self.p.peers[0]} is SECOND and about to take over")
            return
        if heart is not None and heart.settled():
            self.set_state(State.WAIT, Status.NOT_READY)

    def _waiting(self, why: str) -> None:
        why = why.replace("{m}", self.name)
        if why != self._waiting_logged:
            self._waiting_logged = why
            self.log(Level.EVENT, "module", why[0].upper() + why[1:])
        self.set_state(State.WAIT, Status.NOT_READY)

    def _elect_at_start(self, peer: dict[str, Any]) -> bool | None:
        """Both nodes wait: which becomes primary?  Both compute the same answer."""
        mine = (self.data.gen, self.data.role == "prim")
        theirs = (int(peer.get("gen", 0)), peer.get("role") == "prim")
        if mine != theirs:
            return mine > theirs
        if self.data.role in ("new", *NOT_A_GOOD_COPY) and peer.get("role") in ("new", *NOT_A_GOOD_COPY):
            return None
        dp = self.p.config.service.defaultprim
        if dp in (self.p.node, self.p.peers[0]):
            return dp == self.p.node
        return None

    async def _split_brain_healed(self, peer: dict[str, Any]) -> None:
        """Both nodes ran as primary (a partition without witness); one gives way."""
        dp = self.p.config.service.defaultprim
        if dp in (self.p.node, self.p.peers[0]):
            keep = dp == self.p.node
        else:
            mine, theirs = self.primary_since, float(peer.get("since", 0.0))
            keep = (mine, self.p.node) < (theirs, self.p.peers[0])
        if keep:
            return
        self.log(Level.CRITICAL, "module",
                 f"Both nodes were primary (partition healed): this node gives way to {self.p.peers[0]}; "
                 "its changes since the partition are discarded by the resynchronisation")
        await self.to_wait("split brain resolved")
        self._save_data("syncing")

    def _defaultprim_is_peer(self) -> bool:
        return self.p.config.service.defaultprim == self.p.peers[0] and self.state == State.PRIM

    # -- secondary faults (docs/replication.md, "Secondary faults")
    def stream_lost(self) -> None:
        """Primary: hakit-rfs lost the stream to the secondary by itself (an operation the
        secondary failed, no answer, a connection closed) and holds what would be
        acknowledged without it.  The secondary's receivers are told that their copy is
        outdated (the heartbeats' `outdate`); once it says so, or is gone, _fence lets the
        writes go on.  A synchronisation then brings it back, retried with backoff."""
        peer = self.peer()
        self.outdating = int(peer.get("rfs_epoch") or 0) if peer else 0
        self.fence_pending = True
        self.synced_epoch = 0
        if (self.state, self.status) == (State.PRIM, Status.READY):
            self._unprotected("the replication stream to it was lost")
        self.advertise()
        self.check_fence()
        self.wake()

    def _outdated_enough(self, peer: dict[str, Any] | None) -> bool:
        """Can the primary acknowledge writes the secondary lacks?  Yes once that node
        cannot take over by itself with its copy: gone, not running as secondary (or
        leaving that state), or its copy marked outdated (or inconsistent) on its disk."""
        return (peer is None or peer.get("state") != State.SECOND or bool(peer.get("leaving"))
                or peer.get("role") in NOT_A_GOOD_COPY)

    def check_fence(self) -> None:
        """On every peer news too, not only between transitions: a transition in progress
        (stop_prim waiting on the application) may itself wait on a held write."""
        if self.fence_pending and self._fencing is None and self._outdated_enough(self.peer()):
            self._fencing = asyncio.create_task(self._fence(self.peer()))

    async def _fence(self, peer: dict[str, Any] | None) -> None:
        try:
            if not self.fence_pending or not self._outdated_enough(peer) or self.p.rfs is None:
                return
            self.fence_pending = False
            why = ("is gone" if peer is None else "leaves SECOND" if peer.get("leaving") else
                   f"is {peer.get('state')}, its copy {peer.get('role')}")
            self.log(Level.EVENT, "rfs", f"{self.p.peers[0]} {why}: writes go on without it")
            await self.p.rfs.fenced()
        finally:
            self._fencing = None

    async def _await_outdated(self) -> None:
        """The primary restarts its replication in place: not before the secondary knows
        its copy is outdated (bounded by the heartbeats, which declare it lost otherwise)."""
        heart = self.p.heart
        deadline = time.monotonic() + (2 * heart.timeout + 2.0 if heart is not None else 0.0)
        while not self._outdated_enough(self.peer()):
            if time.monotonic() > deadline:
                self.log(Level.CRITICAL, "rfs", f"{self.p.peers[0]} did not confirm that its copy is "
                         "outdated: going on without it")
                return
            await asyncio.sleep(0.05)

    def _unprotected(self, why: str, status: Status = Status.READY) -> None:
        """Primary: the secondary is no good copy any more; this node is ALONE."""
        self.log(Level.CRITICAL, "module", f"{self.p.peers[0]} no longer holds every write acknowledged "
                 f"here ({why}): running alone until it is synchronised")
        self._save_data("prim", self.data.gen + 1)
        self.set_state(State.ALONE, status)

    def _outdate(self, why: str, status: Status = Status.NOT_READY) -> None:
        """Secondary: this copy lacks acknowledged writes; said on disk before the primary
        hears it, so that no restart forgets it."""
        self.log(Level.CRITICAL, "module", f"This copy is outdated: {why}; not Ready until the primary "
                 "synchronises it again")
        self._save_data("outdated")
        self.set_state(State.SECOND, status)

    def rfs_died(self, role: str) -> None:
        """A hakit-rfs died (the rule rfs_failure repairs it): a secondary's copy is
        outdated at once, so that the primary, which lost the stream too, need not wait
        for the repair to go on."""
        if role == "secondary" and self.state == State.SECOND and self.p.rfs is not None:
            self.dead_epoch = self.p.rfs.epoch
            if self.data.role == "second":
                self._outdate("its hakit-rfs died", Status.TRANSIENT)

    async def _repair_replication(self) -> None:
        """Within a restart (the rule rfs_failure's, or an operator's), the application
        stopped: a new hakit-rfs for each that died.  The primary's mount stayed dead
        (writes failed, none landed unreplicated); the secondary is outdated before the
        new one acknowledges anything without it.  A secondary outdates its own copy and
        starts its receivers again; the primary synchronises them."""
        rfs = self.p.rfs
        if rfs is None or not rfs.failed:
            return
        if rfs.role == "primary":
            self.stream_lost()
            await self._peer_gone()  # (no fence left to end: the new hakit-rfs starts unattached)
            await self._await_outdated()
            try:
                await rfs.revive()
            except HakitError as exc:
                raise StartFailed(str(exc)) from None
            if self.state == State.PRIM:
                self._unprotected("this node's hakit-rfs died", Status.TRANSIENT)
        elif rfs.role == "secondary":
            await rfs.stop()
            try:
                await rfs.start("secondary")
            except HakitError as exc:
                raise StartFailed(str(exc)) from None
            self.log(Level.EVENT, "rfs", "Receivers started again: the primary synchronises them")
            self.advertise()

    async def _alone(self) -> None:
        await self._peer_gone()
        if self.state == State.PRIM:
            self.log(Level.EVENT, "module", f"Peer {self.p.peers[0]} gone: running alone")
            self._save_data("prim", self.data.gen + 1)
        self.set_state(State.ALONE, Status.READY)

    async def _witness_allows(self) -> bool:
        """With a split-brain checker: only the node that reaches the witness goes on."""
        w = self.p.witness
        if w is None:
            return True
        ok = await w.reachable(WITNESS_TIMEOUT_S)
        res = f"splitbrain.{w.cfg.ident}"
        self.p.resources.set(res, "up" if ok else "down")
        if ok:
            return True
        self.log(Level.CRITICAL, "module",
                 "Every heartbeat lost and the witness unreachable: this node waits")
        await self.to_wait("witness unreachable")
        return False

    # -- transitions
    async def to_primary(self) -> None:
        was = self.state
        self.set_state(was, Status.TRANSIENT)
        if was == State.SECOND:
            await self.p.checks.disable("second")
            await self._script("stop_second", fatal=False)
        # A copy that equals a lineage (an in-sync secondary, a primary stopped in sync) has its
        # journal record from it: the other node, of that lineage, comes back incrementally.
        adopt = self.data.base if self.data.role in ("second", "prim") else 0
        if self.p.mode == "mirror":
            self._save_data("prim", self.data.gen + 1, base=0)  # this copy moves ahead now
        self.primary_since = time.time()
        self.yielding = False
        self.swap_asked = False
        self.synced_epoch = 0
        self.outdating = 0
        self.fence_pending = False
        self.sync_backoff = self.sync_retry_at = 0.0
        self.leaving = False
        if self.p.rfs is not None:
            try:
                await self.p.rfs.start("primary", adopt=adopt)
            except HakitError as exc:
                raise StartFailed(str(exc)) from None
        if self.p.vip is not None:
            await self.p.vip.take()
        self.set_state(State.ALONE, Status.TRANSIENT)
        await self._script("start_prim")
        await self._enable("prim")
        self.set_state(State.ALONE, Status.READY)
        self.wake()  # the peer may already be waiting to become secondary

    async def to_second(self, peer: dict[str, Any]) -> None:
        self.set_state(State.SECOND, Status.TRANSIENT)
        self.yielding = False
        self.leaving = False
        if self.p.rfs is None:
            await self.second_ready(peer)
            return
        # Until the primary reports its synchronisation done, a crash leaves this copy
        # marked inconsistent: only primforce can make it the reference then.
        self._save_data("syncing")
        try:
            await self.p.rfs.start("secondary")
        except HakitError as exc:
            raise StartFailed(str(exc)) from None
        self.advertise()  # the receivers' epoch: the primary attaches and synchronises

    def _synced_by(self, peer: dict[str, Any]) -> bool:
        rfs = self.p.rfs
        return rfs is None or (rfs.epoch not in (0, self.dead_epoch) and peer.get("synced") == rfs.epoch)

    async def second_ready(self, peer: dict[str, Any], running: bool = False) -> None:
        """running: the application already runs here (an outdated copy synchronised
        again), its scripts are not started twice."""
        # The primary synchronised this copy with its generation as the lineage tag.
        gen = int(peer.get("gen", 0))
        self._save_data("second", gen, base=gen if self.p.rfs is not None else None)
        self.fullsync_asked = False
        if running:
            self.log(Level.EVENT, "module", "This copy is synchronised again")
        else:
            await self._script("start_second")
            await self._enable("second")
        self.set_state(State.SECOND, Status.READY)

    def _start_sync(self, peer: dict[str, Any]) -> None:
        """Primary: synchronise the secondary's new receivers, in the background."""
        epoch = int(peer.get("rfs_epoch") or 0)
        rfs = self.p.rfs
        if rfs is None or not epoch or epoch == self.synced_epoch or self.sync_task is not None:
            return
        if self.p.peer_addr is None or time.monotonic() < self.sync_retry_at:
            return

        async def run() -> None:
            self.attached = True
            try:
                await rfs.sync(self.p.peer_addr or "", tag=self.data.gen,
                               peer_base=int(peer.get("base") or 0), full_asked=bool(peer.get("fullsync")))
            except HakitError as exc:
                self.sync_backoff = min(max(1.0, 2 * self.sync_backoff), SYNC_BACKOFF_MAX_S)
                self.sync_retry_at = time.monotonic() + self.sync_backoff
                # A little after the retry time: woken before it, nothing would try.
                asyncio.get_running_loop().call_later(self.sync_backoff + 0.05, self.wake)
                self.log(Level.CRITICAL, "rfs", f"Synchronisation of the secondary failed: {exc}; "
                         f"tried again in {self.sync_backoff:g} s")
                return
            finally:
                self.sync_task = None
            self.sync_backoff = self.sync_retry_at = 0.0
            self.outdating = 0
            self.synced_epoch = epoch
            self.advertise()
            self.wake()

        self.sync_task = asyncio.create_task(run())

    async def _peer_gone(self) -> None:
        """The secondary is gone: stop waiting for it, the application must not block."""
        if self.sync_task is not None:
            self.sync_task.cancel()
            self.sync_task = None
        if self.attached and self.p.rfs is not None:
            for daemon in self.p.rfs.daemons:
                with contextlib.suppress(HakitError):
                    await daemon.detach()  # which ends a fence too
        self.attached = False
        self.fence_pending = False

    async def start_farm(self) -> None:
        self.set_state(State.WAIT, Status.TRANSIENT)
        farm = self.p.farm
        if farm is not None:
            try:
                await farm.setup(self.p.heart.timeout if self.p.heart else 0.0)
            except HakitError as exc:
                raise StartFailed(str(exc)) from None
        self._open_share()
        await self._script("start_both")
        await self._enable("both")
        self.set_state(State.UP, self._up_status())

    def _up_status(self) -> Status:
        """A farm node whose filter is missing is no member (docs/farm.md, "The filter is
        supervised"): it stays UP, NotReady, until the filter is back."""
        farm = self.p.farm
        return Status.NOT_READY if farm is not None and farm.missing else Status.READY

    def _open_share(self) -> None:
        """Without scriptcontrol the module opens the share before start_both (the seeds' order)."""
        if self.p.farm is not None and not self.p.farm.config.scriptcontrol:
            self.p.farm.open()

    async def update(self, farm_config: Any) -> dict[str, str]:
        """`hakit update`: the farm's virtual IPs and load balancing follow the installed
        configuration; with scriptcontrol the share stays closed until the update script
        (called with the state before and after) opens it, as the seeds' product does."""
        farm = self.p.farm
        if farm is None:
            raise HakitError(f"update applies to farm modules with a <virtual_interface>; "
                             f"{self.name} has none")
        if self.state not in (State.UP, State.WAIT):
            raise HakitError(f"update: module {self.name} is {self.state}; it applies in UP or WAIT")
        before = str(self.state)
        await farm.reload(farm_config)
        if farm.config.scriptcontrol:
            farm.close()
        await self._script("update", before, str(self.state), fatal=False)
        return self.summary()

    async def stop_application(self, force: bool = False, replication: bool = True) -> None:
        """Stop what the current state started (scripts, checkers, VIP, and unless told
        otherwise the replication: a restart in place keeps it)."""
        args = ("force",) if force else ()
        in_sync = 0
        if self.state in PRIMARY:
            await self.p.checks.disable("prim")
            await self._script("stop_prim", *args, fatal=False)
            if self.p.vip is not None:
                await self.p.vip.release()
            if replication and self.p.rfs is not None and self.state == State.PRIM and self.synced_epoch:
                in_sync = await self.p.rfs.in_sync_tag()  # the application stopped: nothing moves
            if replication:
                await self._peer_gone()
        elif self.state == State.SECOND:
            if replication:
                self.leaving = True  # before its stream stops: the primary need not wait for more
                self.advertise()
            await self.p.checks.disable("second")
            await self._script("stop_second", *args, fatal=False)
        if self.p.rfs is not None and self.state in (*PRIMARY, State.SECOND):
            if replication:
                await self.p.rfs.stop()
            if in_sync:
                # Stopped in sync: this copy equals the secondary's; whichever of the two is
                # primary next records from that lineage and the other returns incrementally.
                self._save_data(self.data.role, base=in_sync)
        elif self.state == State.UP:
            await self.p.checks.disable("both")
            farm = self.p.farm
            if farm is not None and not farm.config.scriptcontrol:
                # Before the application stops, not after: new clients go to the other
                # nodes at once while this node's established ones finish.
                farm.close()
            await self._script("stop_both", *args, fatal=False)
            if farm is not None:
                farm.close()  # scriptcontrol: whatever the scripts did, a stopped node takes nobody

    async def to_wait(self, reason: str) -> None:
        self.log(Level.EVENT, "module", f"Going to WAIT: {reason}")
        self.set_state(self.state, Status.TRANSIENT)
        await self.stop_application()
        self.yielding = False
        self.set_state(State.WAIT, Status.NOT_READY)

    async def hand_over(self) -> None:
        """swap, primary side: stop the application and let the secondary take over."""
        self.set_state(self.state, Status.TRANSIENT)
        await self.stop_application()
        self.yielding = True
        self.set_state(State.SECOND, Status.TRANSIENT)

    async def finish(self, force: bool = False, reason: str = "") -> None:
        """Stop the module: application, checkers, poststop; then the process ends."""
        if self.stopped.is_set():
            return
        if reason:
            self.log(Level.CRITICAL, "module", f"Stopping module: {reason}")
        self.set_state(self.state, Status.TRANSIENT)
        await self.stop_application(force)
        if self.p.farm is not None:
            await self.p.farm.release()
        await self.p.checks.stop_all()
        await self._script("poststop", *(("force",) if force else ()), fatal=False)
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
            await self.swap()
        elif action == "prim":
            self.wake()
        elif action == "wait":
            self.wake()  # the rule holds: reconcile moves to WAIT
        else:
            raise HakitError(f"unknown action {action}")

    async def restart(self) -> None:
        state = self.state
        if state not in (*PRIMARY, State.SECOND, State.UP):
            raise HakitError(f"module {self.name} is {state}: nothing runs to restart")
        self.set_state(state, Status.TRANSIENT)
        await self.stop_application(replication=False)
        await self._repair_replication()
        state = self.state  # a primary whose secondary was outdated is ALONE now
        if self.p.vip is not None and state in PRIMARY:
            await self.p.vip.take()
        script, klass = {State.SECOND: ("start_second", "second"), State.UP: ("start_both", "both")}.get(
            state, ("start_prim", "prim"))
        if state == State.UP:
            self._open_share()
        await self._script(script)
        await self._enable(klass)
        # A secondary whose copy is not a good one is not Ready until synchronised.
        bad_copy = state == State.SECOND and self.p.rfs is not None and self.data.role in NOT_A_GOOD_COPY
        ready = self._up_status() if state == State.UP else Status.READY
        self.set_state(state, Status.NOT_READY if bad_copy else ready)

    async def stopstart(self) -> None:
        self.set_state(self.state, Status.TRANSIENT)
        await self.stop_application()
        await self.p.checks.disable("pre")
        await self._script("poststop", fatal=False)
        self.set_state(State.STOP, Status.TRANSIENT)
        if self.p.heart is not None and self.p.peers:
            # Let the secondary see this node stopped before it comes back waiting.
            await asyncio.sleep(self.p.heart.pulse * 2)
        await self.begin()

    async def swap(self) -> None:
        peer = self.peer()
        if self.p.mode != "mirror":
            raise HakitError("swap applies to mirror modules")
        if self.state == State.PRIM and peer and peer.get("state") == State.SECOND:
            await self.hand_over()
        elif self.state == State.SECOND and peer and peer.get("state") == State.PRIM:
            self.swap_asked = True
            self.advertise()
        else:
            raise HakitError(f"swap needs PRIM and SECOND; this node is {self.state}")

    # -- operator commands (run as jobs)
    async def command(self, verb: str, fullsync: bool = False) -> dict[str, str]:
        peer = self.peer()
        pstate = peer.get("state") if peer else None
        if verb in ("prim", "primforce"):
            if self.p.mode != "mirror":
                raise HakitError(f"{verb} applies to mirror modules; this one is {self.p.mode}")
            if self.state in PRIMARY:
                return self.summary()
            if pstate in PRIMARY:
                raise HakitError(f"{self.p.peers[0]} is already {pstate}: use swap to change the primary")
            if self.state == State.SECOND:
                raise HakitError(f"this node is SECOND of {self.p.peers[0]}: use swap")
            refusal = self.data.prim_refusal()
            if verb == "prim" and refusal:
                raise HakitError(f"prim refused: {refusal}")
            self.intent = verb
            await self._from_wait(peer)
        elif verb == "second":
            if self.p.mode != "mirror":
                raise HakitError(f"second applies to mirror modules; this one is {self.p.mode}")
            if fullsync and self.p.rfs is None:
                raise HakitError("second fullsync: this module replicates no directory")
            self.fullsync_asked |= fullsync
            if self.state in PRIMARY:
                self.intent = "second"
                await self.to_wait("second requested")
            elif self.state == State.WAIT:
                self.intent = "second"
            elif self.state == State.SECOND and fullsync:
                # Start the receivers again: the primary synchronises them, fully this time.
                self.intent = "second"
                await self.to_wait("second fullsync requested")
                await self._from_wait(peer)
        elif verb == "swap":
            await self.swap()
        elif verb == "restart":
            await self.restart()
        elif verb == "stopstart":
            await self.stopstart()
        else:
            raise HakitError(f"unknown command {verb}")
        return self.summary()

    def summary(self) -> dict[str, str]:
        return {"state": str(self.state), "status": str(self.status)}
