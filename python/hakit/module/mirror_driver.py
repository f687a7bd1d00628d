"""The mirror's driver: two nodes, one primary (ALONE, or PRIM once its secondary is
synchronised) and one SECOND, the replicated directories streamed from the first to the
second (hakit.rfs).  Behaviour: docs/engine.md, "Mirror automaton"; the secondary's
faults: docs/replication.md, "Secondary faults".

Each node decides from what it sees: the peer's news (heartbeats), the prim rules that
hold, the operator's intent (`prim`, `primforce`, `second`) and the data state on disk
(datastate.py), which says whether this copy may become the reference.  Both nodes
compute the same answer from the same news: which one starts as primary, which one
gives way after a split brain.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING

from hakit.errors import HakitError
from hakit.module.datastate import NOT_A_GOOD_COPY, DataState
from hakit.module.driver import Driver, StartFailed
from hakit.module.news import News
from hakit.module.states import PRIMARY, State, Status
from hakit.store.module_store import Level

if TYPE_CHECKING:
    from hakit.module.automaton import Automaton

WITNESS_TIMEOUT_S = 1.0
# A secondary that loses the primary's heartbeats while its receivers still hear the
# primary's stream (a module process restarting there: docs/engine.md, "A module process
# that dies") waits this long for them to come back before it takes over.
FLOW_GRACE_S = 5.0
FLOW_CHECK_S = 0.1  # meanwhile the stream is looked at this often
# A failed synchronisation of the secondary is tried again after 1, 2, 4, 8, 10, 10... s.
SYNC_BACKOFF_MAX_S = 10.0


class MirrorDriver(Driver):
    def __init__(self, a: Automaton, intent: str | None, fullsync: bool) -> None:
        super().__init__(a)
        self.data = DataState.load(self.p.datastate_path)
        self.intent = intent  # prim, primforce, second: an operator's choice still to honour
        self.fullsync_asked = fullsync  # second fullsync: until this node is synchronised
        self.primary_since = 0.0
        self.yielding = False  # swap: this primary handed over and waits to become secondary
        self.swap_asked = False  # swap asked on the secondary, carried to the primary by heartbeat
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
        # Resumed in place of a primary's process that died: until the peer is heard (or
        # known gone), whether the stream was lost meanwhile and the role it had.
        self.resumed: tuple[State, bool] | None = None
        self.grace_until = 0.0  # secondary: the primary's heartbeats lost, its stream alive

    @property
    def peer_name(self) -> str:
        """The peer's name."""
        return self.p.peers[0]

    def peer(self) -> News | None:
        """The peer's news while it is heard, else None."""
        if self.p.heart is None or not self.p.peers:
            return None
        wire = self.p.heart.peer(self.peer_name)
        return None if wire is None else News.from_wire(wire)

    def news(self, news: News) -> News:
        rfs = self.p.rfs
        return dataclasses.replace(
            news, since=self.primary_since, yielding=self.yielding, swap=self.swap_asked,
            rfs_epoch=rfs.epoch if rfs else 0, synced=self.synced_epoch, fullsync=self.fullsync_asked,
            outdate=self.outdating, leaving=self.leaving, sync=rfs.progress if rfs else {},
        )

    def _save_data(self, role: str, gen: int | None = None, base: int | None = None) -> None:
        self.data.role = role
        if gen is not None:
            self.data.gen = gen
        if base is not None:
            self.data.base = base
        self.data.save(self.p.datastate_path)
        self.a.advertise()

    # -- reconciliation
    async def reconcile(self) -> None:
        a = self.a
        peer = self.peer()
        pstate = peer.state if peer is not None else None
        if a.state == State.WAIT:
            await self._from_wait(peer)
        elif a.state == State.SECOND:
            rfs = self.p.rfs
            if peer is not None:
                self.grace_until = 0.0
            if (rfs is not None and peer is not None and rfs.epoch and peer.outdate == rfs.epoch
                    and self.data.role == "second"):
                self._outdate(f"{self.peer_name} lost the replication stream to this node and goes on "
                              "without it")
            if rfs is not None and peer is not None and a.status != Status.READY:
                rfs.show_peer_progress(peer.sync)
            if (a.status != Status.READY and not self.yielding and peer is not None
                    and pstate in PRIMARY and self._synced_by(peer)):
                await self.second_ready(peer, running=a.status == Status.NOT_READY)
                return
            if self.yielding:
                if pstate in PRIMARY and peer is not None and peer.status == Status.READY:
                    await self.to_second(peer)
                elif peer is None and await self._witness_allows():
                    self.yielding = False
                    await self.to_primary()
                return
            gone = peer is None and a.failover.holding("prim")
            left = peer is not None and (
                pstate in (State.STOP, State.WAIT) or (pstate == State.SECOND and peer.yielding))
            if (gone or left) and self.data.role in NOT_A_GOOD_COPY:
                await a.to_wait(f"{self.peer_name} is gone before this copy was synchronised: "
                                "it is inconsistent (primforce decides)")
            elif gone and await self._stream_alive():
                return
            elif gone and await self._witness_allows():
                a.log(Level.EVENT, "module", f"Peer {self.peer_name} lost: taking over")
                await self.to_primary()
            elif left:
                a.log(Level.EVENT, "module", f"Peer {self.peer_name} is {pstate}: taking over")
                await self.to_primary()
        elif a.state in PRIMARY:
            if self.resumed is not None and not await self._resume_seen(peer):
                return
            await self._fence(peer)
            if peer is None:
                if a.state == State.PRIM and not await self._witness_allows():
                    return
                await self._alone()
            elif pstate in PRIMARY:
                await self._split_brain_healed(peer)
            elif pstate == State.SECOND and peer.status != Status.READY and not peer.yielding:
                if a.state == State.PRIM and a.status == Status.READY:
                    self._unprotected(f"{self.peer_name} is SECOND ({peer.status})")
                if not self.fence_pending:
                    self._start_sync(peer)
            elif pstate == State.SECOND and peer.status == Status.READY and not peer.yielding:
                if a.state == State.ALONE and not self.outdating:
                    a.set_state(State.PRIM, Status.READY)
                if peer.swap or self._defaultprim_is_peer():
                    why = "asked by the secondary" if peer.swap else "the peer is the default primary"
                    a.log(Level.EVENT, "module", f"Swap: {why}")
                    await self.hand_over()
            elif a.state == State.PRIM:
                await self._alone()

    # -- a module process that died (docs/engine.md, "A module process that dies")
    async def resume(self, state: State, status: Status) -> str | None:
        """Primary: the hakit-rfs, VIP and application the dead process ran went on; take
        them over without running a start script.  The state says only what is known
        until the peer is heard: PRIM (Transient) while the stream is attached and whole,
        else ALONE (Transient)."""
        if state not in PRIMARY or status != Status.READY or self.data.role != "prim":
            return f"it died in {state} ({status}), its copy {self.data.role}"
        rfs = self.p.rfs
        attached = lost = False
        if rfs is not None:
            why = await rfs.adopt("primary")
            if why is not None:
                return why
            try:
                for daemon in rfs.daemons:
                    stats = await daemon.stats()
                    attached |= stats.get("attached") == "1"
                    lost |= stats.get("fencing") == "1"  # detached by itself: writes held
                    rfs.resources.set("rfs.state", "attached" if stats.get("attached") == "1" else "primary")
            except HakitError as exc:
                rfs.release()
                return str(exc)
        try:
            await self.a.enable("pre")
            await self.a.enable("prim")
            if self.p.vip is not None:
                await self.p.vip.take()  # (already there: held again, announced again)
        except HakitError as exc:
            if rfs is not None:
                rfs.release()
            return str(exc)
        whole = state == State.PRIM and attached and not lost
        if state == State.PRIM and not whole:
            self._save_data("prim", self.data.gen + 1)  # the secondary lost what was written since
        self.primary_since = time.time()  # later than a peer that took over meanwhile: it keeps the role
        self.attached = attached or lost
        self.resumed = (state if whole else State.ALONE, lost)
        self.a.set_state(self.resumed[0], Status.TRANSIENT)
        return None

    async def _resume_seen(self, peer: News | None) -> bool:
        """The first look at the peer after a resume: whether the usual reconciliation
        goes on.  A peer that took over meanwhile keeps the role: this node's writes since
        were held by the fence (its receivers stopped first), so killing this hakit-rfs
        fails them rather than acknowledging them, and the application stops."""
        heart = self.p.heart
        if peer is None and heart is not None and not heart.settled():
            return False  # a running peer has not had the time to be heard
        assert self.resumed is not None
        state, lost = self.resumed
        self.resumed = None
        a = self.a
        if peer is not None and peer.state in PRIMARY:
            a.log(Level.CRITICAL, "module", f"{self.peer_name} took over while this node's module process "
                  "was down: this node gives way, and what was written here since is discarded")
            if self.p.rfs is not None:
                for daemon in self.p.rfs.daemons:
                    await daemon.kill()
            await a.to_wait("the peer took over")
            self._save_data("syncing")
            return False
        if (peer is not None and peer.state == State.SECOND and peer.status == Status.READY
                and state == State.PRIM):
            self.synced_epoch = peer.rfs_epoch
        a.set_state(state, Status.READY)
        if lost:
            self.stream_lost()
        return True

    async def _stream_alive(self) -> bool:
        """Secondary, the primary's heartbeats lost: whether to wait for them rather than
        take over, because this node's receivers still hear the primary's stream (its node
        and hakit-rfs live; its module process is being replaced).  For FLOW_GRACE_S at
        most; a stream silent for half what the heartbeats allow (a dead node: silent on
        both, and for longer already) ends the wait at once."""
        rfs, heart = self.p.rfs, self.p.heart
        if rfs is None or heart is None or rfs.role != "secondary":
            return False
        now = time.monotonic()
        first = not self.grace_until
        if first:
            self.grace_until = now + FLOW_GRACE_S
        elif now > self.grace_until:
            self.a.log(Level.EVENT, "module", f"{self.peer_name}'s heartbeats did not come back within "
                       f"{FLOW_GRACE_S:g} s")
            return False
        idle = await rfs.stream_idle()
        if idle is None or idle > (heart.timeout - heart.pulse) * 3 / 4:
            if not first:
                self.a.log(Level.EVENT, "module", f"{self.peer_name}'s replication stream stopped too")
            return False
        if first:
            self.a.log(Level.EVENT, "module", f"Peer {self.peer_name} lost but its replication stream goes "
                       f"on: waiting up to {FLOW_GRACE_S:g} s for its module process")
        asyncio.get_running_loop().call_later(FLOW_CHECK_S, self.a.wake)
        return True

    async def _from_wait(self, peer: News | None) -> None:
        a = self.a
        pstate = peer.state if peer is not None else None
        if peer is not None and pstate in PRIMARY and not peer.yielding:
            if self.intent in ("prim", "primforce"):
                a.log(Level.CRITICAL, "module", f"{self.intent} dropped: {self.peer_name} is {pstate}")
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
                self._waiting(f"waiting for {self.peer_name} to become primary")
            return
        heart = self.p.heart
        if peer is None and heart is not None and heart.settled() and a.failover.holding("prim"):
            if self.data.role == "prim":
                await self.to_primary()
            else:
                why = self.data.prim_refusal() or "this module never ran as primary here"
                self._waiting(f"peer absent and {why}; 'hakit prim -m {{m}}' decides")
            return
        if peer is not None and pstate == State.SECOND:
            self._waiting(f"waiting: {self.peer_name} is SECOND and about to take over")
            return
        if heart is not None and heart.settled():
            a.set_state(State.WAIT, Status.NOT_READY)

    def _waiting(self, why: str) -> None:
        why = why.replace("{m}", self.a.name)
        if why != self._waiting_logged:
            self._waiting_logged = why
            self.a.log(Level.EVENT, "module", why[0].upper() + why[1:])
        self.a.set_state(State.WAIT, Status.NOT_READY)

    def _elect_at_start(self, peer: News) -> bool | None:
        """Both nodes wait: which becomes primary?  Both compute the same answer."""
        mine = (self.data.gen, self.data.role == "prim")
        theirs = (peer.gen, peer.role == "prim")
        if mine != theirs:
            return mine > theirs
        if self.data.role in ("new", *NOT_A_GOOD_COPY) and peer.role in ("new", *NOT_A_GOOD_COPY):
            return None
        dp = self.p.config.service.defaultprim
        if dp in (self.p.node, self.peer_name):
            return dp == self.p.node
        return None

    async def _split_brain_healed(self, peer: News) -> None:
        """Both nodes ran as primary (a partition without witness); one gives way."""
        dp = self.p.config.service.defaultprim
        if dp in (self.p.node, self.peer_name):
            keep = dp == self.p.node
        else:
            keep = (self.primary_since, self.p.node) < (peer.since, self.peer_name)
        if keep:
            return
        self.a.log(Level.CRITICAL, "module",
                   f"Both nodes were primary (partition healed): this node gives way to {self.peer_name}; "
                   "its changes since the partition are discarded by the resynchronisation")
        await self.a.to_wait("split brain resolved")
        self._save_data("syncing")

    def _defaultprim_is_peer(self) -> bool:
        return self.p.config.service.defaultprim == self.peer_name and self.a.state == State.PRIM

    # -- secondary faults (docs/replication.md, "Secondary faults")
    def stream_lost(self) -> None:
        """Primary: hakit-rfs lost the stream to the secondary by itself (an operation the
        secondary failed, no answer, a connection closed) and holds what would be
        acknowledged without it.  The secondary's receivers are told that their copy is
        outdated (the heartbeats' `outdate`); once it says so, or is gone, _fence lets the
        writes go on.  A synchronisation then brings it back, retried with backoff."""
        a = self.a
        peer = self.peer()
        self.outdating = peer.rfs_epoch if peer is not None else 0
        self.fence_pending = True
        self.synced_epoch = 0
        if (a.state, a.status) == (State.PRIM, Status.READY):
            self._unprotected("the replication stream to it was lost")
        a.advertise()
        self.check_fence()
        a.wake()

    def _outdated_enough(self, peer: News | None) -> bool:
        """Can the primary acknowledge writes the secondary lacks?  Yes once that node
        cannot take over by itself with its copy: gone, not running as secondary (or
        leaving that state), or its copy marked outdated (or inconsistent) on its disk."""
        return (peer is None or peer.state != State.SECOND or peer.leaving
                or peer.role in NOT_A_GOOD_COPY)

    def check_fence(self) -> None:
        """On every peer news too, not only between transitions: a transition in progress
        (stop_prim waiting on the application) may itself wait on a held write."""
        if self.fence_pending and self._fencing is None and self._outdated_enough(self.peer()):
            self._fencing = asyncio.create_task(self._fence(self.peer()))

    async def _fence(self, peer: News | None) -> None:
        try:
            if not self.fence_pending or not self._outdated_enough(peer) or self.p.rfs is None:
                return
            self.fence_pending = False
            why = ("is gone" if peer is None else "leaves SECOND" if peer.leaving else
                   f"is {peer.state}, its copy {peer.role}")
            self.a.log(Level.EVENT, "rfs", f"{self.peer_name} {why}: writes go on without it")
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
                self.a.log(Level.CRITICAL, "rfs", f"{self.peer_name} did not confirm that its copy is "
                           "outdated: going on without it")
                return
            await asyncio.sleep(0.05)

    def _unprotected(self, why: str, status: Status = Status.READY) -> None:
        """Primary: the secondary is no good copy any more; this node is ALONE."""
        self.a.log(Level.CRITICAL, "module", f"{self.peer_name} no longer holds every write acknowledged "
                   f"here ({why}): running alone until it is synchronised")
        self._save_data("prim", self.data.gen + 1)
        self.a.set_state(State.ALONE, status)

    def _outdate(self, why: str, status: Status = Status.NOT_READY) -> None:
        """Secondary: this copy lacks acknowledged writes; said on disk before the primary
        hears it, so that no restart forgets it."""
        self.a.log(Level.CRITICAL, "module", f"This copy is outdated: {why}; not Ready until the primary "
                   "synchronises it again")
        self._save_data("outdated")
        self.a.set_state(State.SECOND, status)

    def rfs_died(self, role: str) -> None:
        """A hakit-rfs died (the rule rfs_failure repairs it): a secondary's copy is
        outdated at once, so that the primary, which lost the stream too, need not wait
        for the repair to go on."""
        if role == "secondary" and self.a.state == State.SECOND and self.p.rfs is not None:
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
            if self.a.state == State.PRIM:
                self._unprotected("this node's hakit-rfs died", Status.TRANSIENT)
        elif rfs.role == "secondary":
            await self._rfs_stop()
            await self._rfs_start("secondary")
            self.a.log(Level.EVENT, "rfs", "Receivers started again: the primary synchronises them")
            self.a.advertise()

    async def _alone(self) -> None:
        await self._peer_gone()
        if self.a.state == State.PRIM:
            self.a.log(Level.EVENT, "module", f"Peer {self.peer_name} gone: running alone")
            self._save_data("prim", self.data.gen + 1)
        self.a.set_state(State.ALONE, Status.READY)

    async def _witness_allows(self) -> bool:
        """With a split-brain checker: only the node that reaches the witness goes on."""
        w = self.p.witness
        if w is None:
            return True
        ok = await w.reachable(WITNESS_TIMEOUT_S)
        self.p.resources.set(f"splitbrain.{w.cfg.ident}", "up" if ok else "down")
        if ok:
            return True
        self.a.log(Level.CRITICAL, "module",
                   "Every heartbeat lost and the witness unreachable: this node waits")
        await self.a.to_wait("witness unreachable")
        return False

    # -- transitions
    async def to_primary(self) -> None:
        a = self.a
        was = a.state
        a.set_state(was, Status.TRANSIENT)
        if was == State.SECOND:
            await a.stop_role("second")
        # A copy that equals a lineage (an in-sync secondary, a primary stopped in sync) has its
        # journal record from it: the other node, of that lineage, comes back incrementally.
        adopt = self.data.base if self.data.role in ("second", "prim") else 0
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
            await self._rfs_start("primary", adopt)
        await a.start_primary()

    async def to_second(self, peer: News) -> None:
        self.a.set_state(State.SECOND, Status.TRANSIENT)
        self.yielding = False
        self.leaving = False
        if self.p.rfs is None:
            await self.second_ready(peer)
            return
        # Until the primary reports its synchronisation done, a crash leaves this copy
        # marked inconsistent: only primforce can make it the reference then.
        self._save_data("syncing")
        await self._rfs_start("secondary")
        self.a.advertise()  # the receivers' epoch: the primary attaches and synchronises

    async def _rfs_start(self, role: str, adopt: int = 0) -> None:
        """The replication in a role; with <rfs scripts="on">, start_rfs before it starts
        (and stop_rfs after the other role's stopped)."""
        rfs = self.p.rfs
        assert rfs is not None
        if rfs.role == role:
            return
        await self._rfs_stop()
        if rfs.cfg.scripts:
            await self.a.script("start_rfs")
        try:
            await rfs.start(role, adopt=adopt)
        except HakitError as exc:
            raise StartFailed(str(exc)) from None

    async def _rfs_stop(self) -> None:
        """The replication stopped, if it runs; with <rfs scripts="on">, stop_rfs after."""
        rfs = self.p.rfs
        assert rfs is not None
        was = rfs.role
        await rfs.stop()  # also what a start that failed midway left
        if rfs.cfg.scripts and was is not None:
            await self.a.stop_script("stop_rfs", False)

    def _synced_by(self, peer: News) -> bool:
        rfs = self.p.rfs
        return rfs is None or (rfs.epoch not in (0, self.dead_epoch) and peer.synced == rfs.epoch)

    async def second_ready(self, peer: News, running: bool = False) -> None:
        """running: the application already runs here (an outdated copy synchronised
        again), its scripts are not started twice."""
        # The primary synchronised this copy with its generation as the lineage tag.
        self._save_data("second", peer.gen, base=peer.gen if self.p.rfs is not None else None)
        self.fullsync_asked = False
        if running:
            self.a.log(Level.EVENT, "module", "This copy is synchronised again")
        else:
            await self.a.start_role("second")
        self.a.set_state(State.SECOND, Status.READY)

    def _start_sync(self, peer: News) -> None:
        """Primary: synchronise the secondary's new receivers, in the background."""
        epoch = peer.rfs_epoch
        rfs = self.p.rfs
        if rfs is None or not epoch or epoch == self.synced_epoch or self.sync_task is not None:
            return
        if self.p.peer_addr is None or time.monotonic() < self.sync_retry_at:
            return

        async def run() -> None:
            self.attached = True
            try:
                await rfs.sync(self.p.peer_addr or "", tag=self.data.gen, peer_base=peer.base,
                               full_asked=peer.fullsync)
            except HakitError as exc:
                self.sync_backoff = min(max(1.0, 2 * self.sync_backoff), SYNC_BACKOFF_MAX_S)
                self.sync_retry_at = time.monotonic() + self.sync_backoff
                # A little after the retry time: woken before it, nothing would try.
                asyncio.get_running_loop().call_later(self.sync_backoff + 0.05, self.a.wake)
                self.a.log(Level.CRITICAL, "rfs", f"Synchronisation of the secondary failed: {exc}; "
                           f"tried again in {self.sync_backoff:g} s")
                return
            finally:
                self.sync_task = None
            self.sync_backoff = self.sync_retry_at = 0.0
            self.outdating = 0
            self.synced_epoch = epoch
            self.a.advertise()
            self.a.wake()

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

    async def stop_application(self, force: bool, replication: bool) -> None:
        a = self.a
        in_sync = 0
        if a.state in PRIMARY:
            await a.stop_primary(force)
            if replication and self.p.rfs is not None and a.state == State.PRIM and self.synced_epoch:
                in_sync = await self.p.rfs.in_sync_tag()  # the application stopped: nothing moves
            if replication:
                await self._peer_gone()
        elif a.state == State.SECOND:
            if replication:
                self.leaving = True  # before its stream stops: the primary need not wait for more
                a.advertise()
            await a.stop_role("second", force)
        if self.p.rfs is not None and a.state in (*PRIMARY, State.SECOND):
            if replication:
                await self._rfs_stop()
            if in_sync:
                # Stopped in sync: this copy equals the secondary's; whichever of the two is
                # primary next records from that lineage and the other returns incrementally.
                self._save_data(self.data.role, base=in_sync)

    async def restart(self) -> None:
        a = self.a
        await self._repair_replication()
        state = a.state  # a primary whose secondary was outdated is ALONE now
        if state != State.SECOND:
            await a.restart_primary()
            return
        await a.start_role("second")
        # A secondary whose copy is not a good one is not Ready until synchronised.
        bad_copy = self.p.rfs is not None and self.data.role in NOT_A_GOOD_COPY
        a.set_state(state, Status.NOT_READY if bad_copy else Status.READY)

    def stopped_for_wait(self) -> None:
        self.yielding = False

    async def hand_over(self) -> None:
        """swap, primary side: stop the application and let the secondary take over."""
        a = self.a
        a.set_state(a.state, Status.TRANSIENT)
        await a.stop_application()
        self.yielding = True
        a.set_state(State.SECOND, Status.TRANSIENT)

    # -- commands
    async def swap(self) -> None:
        peer = self.peer()
        pstate = peer.state if peer is not None else None
        if self.a.state == State.PRIM and pstate == State.SECOND:
            await self.hand_over()
        elif self.a.state == State.SECOND and pstate == State.PRIM:
            self.swap_asked = True
            self.a.advertise()
        else:
            raise HakitError(f"swap needs PRIM and SECOND; this node is {self.a.state}")

    async def command(self, verb: str, fullsync: bool) -> None:
        a = self.a
        if verb == "swap":
            await self.swap()
            return
        peer = self.peer()
        pstate = peer.state if peer is not None else None
        if verb in ("prim", "primforce"):
            if a.state in PRIMARY:
                return
            if pstate in PRIMARY:
                raise HakitError(f"{self.peer_name} is already {pstate}: use swap to change the primary")
            if a.state == State.SECOND:
                raise HakitError(f"this node is SECOND of {self.peer_name}: use swap")
            refusal = self.data.prim_refusal()
            if verb == "prim" and refusal:
                raise HakitError(f"prim refused: {refusal}")
            self.intent = verb
            await self._from_wait(peer)
        elif verb == "second":
            if fullsync and self.p.rfs is None:
                raise HakitError("second fullsync: this module replicates no directory")
            self.fullsync_asked |= fullsync
            if a.state in PRIMARY:
                self.intent = "second"
                await a.to_wait("second requested")
            elif a.state == State.WAIT:
                self.intent = "second"
            elif a.state == State.SECOND and fullsync:
                # Start the receivers again: the primary synchronises them, fully this time.
                self.intent = "second"
                await a.to_wait("second fullsync requested")
                await self._from_wait(peer)
