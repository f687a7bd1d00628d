"""errd: process and service monitoring, driven by the kernel's process events.

Each <proc> keeps the set of this node's processes that match it: filled by a scan
of /proc when its monitoring starts, then kept by events only (proc_events.py):
an exec or a name change of a process is checked against every monitor, a fork of
a counted process counts the child (prefork servers), an exit of a counted process
removes it.  A count outside [atleast, atmost] makes resource errd.<name> down at
once and runs the <proc>'s action: a module action (restart, stopstart, ...) or a
script of the module's bin/.  When the count is right again the resource is up.

service="on" watches the MainPID systemd reports for the unit: its exit is seen
like any other, and an exec inside the unit's cgroup (systemd starting it again)
asks systemd for the new MainPID.

Classes: prim, second, both and pre follow the module's state (check/base.runs_in);
any other class runs between `hakit errd enable CLASS` and `hakit errd disable
CLASS`, and only while the module runs.  Those commands also pause and resume a
standard class.  `hakit errd off|suspend` stops everything until `on|resume`.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from hakit.check.base import BOTH, DOWN, PRE, PRIM, SECOND, UNKNOWN, UP, CheckContext, runs_in
from hakit.check.proc_events import Comm, Event, Exec, Exit, Fork, ProcEvents
from hakit.check.procs import ProcInfo, ProcMatcher, alive, own_netns, uid_of
from hakit.config.module_model import Proc
from hakit.config.rules import ACTIONS
from hakit.errors import HakitError
from hakit.store.module_store import Level

STANDARD_CLASSES = (PRE, PRIM, SECOND, BOTH)
CLASS_ALIASES = {"sec": SECOND}  # SafeKit accepts both spellings
# A process started in the background by start_prim may exec just after the script
# returned and monitoring began: a short count at that moment is judged after this.
ENABLE_GRACE_S = 1.0


class ProcMonitor:
    """One <proc>: the pids counted for it and the verdict published."""

    def __init__(self, proc: Proc, resource: str, netns: tuple[int, int]) -> None:
        self.proc = proc
        self.resource = resource
        self.klass = CLASS_ALIASES.get(proc.klass, proc.klass)
        self.unit = (proc.name if "." in proc.name else f"{proc.name}.service") if proc.service else None
        self.matcher = ProcMatcher(proc.name, proc.nameregex, proc.argregex, netns,
                                   uid_of(proc.user) if proc.user is not None else None)
        self.pids: set[int] = set()
        self.running = False
        self.state: str | None = None  # UP or DOWN once judged
        self.grace: asyncio.TimerHandle | None = None
        self.requery: asyncio.Task[None] | None = None

    def problem(self) -> str | None:
        n, name = len(self.pids), self.proc.name
        what = "Service" if self.unit else "Process"
        if n < self.proc.atleast:
            return f"{what} {name} not running" if n == 0 else (
                f"{what} {name}: {n} running, at least {self.proc.atleast} needed"
            )
        if 0 <= self.proc.atmost < n:
            return f"{what} {name}: {n} running, at most {self.proc.atmost} allowed"
        return None

    def dump(self) -> dict[str, Any]:
        return {
            "kind": "errd", "name": self.proc.name, "resource": self.resource, "class": self.klass,
            "service": self.proc.service, "atleast": self.proc.atleast, "atmost": self.proc.atmost,
            "action": self.proc.action, "running": self.running, "count": len(self.pids),
        }


def resource_names(procs: tuple[Proc, ...]) -> list[str]:
    """errd.<name>; a name given by several <proc> (same program, other argregex)
    gets .2, .3, ... in file order."""
    seen: dict[str, int] = {}
    out = []
    for p in procs:
        seen[p.name] = seen.get(p.name, 0) + 1
        out.append(f"errd.{p.name}" + (f".{seen[p.name]}" if seen[p.name] > 1 else ""))
    return out


class Errd:
    def __init__(self, ctx: CheckContext, admin: str = "on") -> None:
        self.ctx = ctx
        errd = ctx.config.service.errd
        procs = errd.procs if errd is not None else ()
        netns = own_netns()
        self._netns = netns
        self.monitors = [ProcMonitor(p, r, netns) for p, r in zip(procs, resource_names(procs), strict=True)]
        self._module: set[str] = set()  # classes the module enabled
        self._user: dict[str, bool] = {}  # hakit errd enable|disable CLASS
        self._admin = admin  # AdminFlags.errd
        self._events = ProcEvents(self._on_event, self._on_overrun)
        self._lock = asyncio.Lock()
        self._actions: set[asyncio.Task[None]] = set()

    @property
    def admin(self) -> str:
        return self._admin

    # -- what the module and the commands call

    async def enable(self, klass: str) -> None:
        self._module.add(klass)
        await self.reconcile()

    async def disable(self, klass: str) -> None:
        self._module.discard(klass)
        await self.reconcile()

    async def enable_class(self, klass: str) -> None:
        """`hakit errd enable CLASS`."""
        self._user[self._known(klass)] = True
        await self.reconcile()

    async def disable_class(self, klass: str) -> None:
        """`hakit errd disable CLASS`."""
        self._user[self._known(klass)] = False
        await self.reconcile()

    def set_admin(self, state: str) -> None:
        """on, off or suspended (admin.AdminFlags.errd); applied by the next reconcile()."""
        self._admin = state

    async def stop_all(self) -> None:
        self._module.clear()
        self._user.clear()
        await self.reconcile()

    def dump(self) -> list[dict[str, Any]]:
        return [m.dump() for m in self.monitors]

    def _known(self, klass: str) -> str:
        klass = CLASS_ALIASES.get(klass, klass)
        if klass not in {m.klass for m in self.monitors}:
            classes = ", ".join(sorted({m.klass for m in self.monitors})) or "none"
            raise HakitError(f"module {self.ctx.module} has no <proc class=\"{klass}\"> (classes: {classes})")
        return klass

    # -- starting and stopping monitors

    def _wanted(self, m: ProcMonitor) -> bool:
        if self._admin != "on" or not self._module:
            return False
        if m.klass in STANDARD_CLASSES:
            return runs_in(m.klass, self._module) and self._user.get(m.klass, True)
        return self._user.get(m.klass, False)

    async def reconcile(self) -> None:
        async with self._lock:
            for m in self.monitors:
                if m.running and not self._wanted(m):
                    self._stop(m)
            starting = [m for m in self.monitors if not m.running and self._wanted(m)]
            if starting and any(m.unit for m in starting) and shutil.which("systemctl") is None:
                raise HakitError("errd: <proc service=\"on\"> needs systemd (systemctl not found)")
            if starting:
                # Subscribed before the scans: a birth or death during a scan is queued, not lost.
                self._events.open()
            for m in starting:
                await self._start(m)
            if not any(m.running for m in self.monitors):
                self._events.close()

    async def _start(self, m: ProcMonitor) -> None:
        m.running, m.state = True, None
        self.ctx.resources.set(m.resource, UNKNOWN)  # not a stale verdict of an earlier run
        m.pids = await self._main_pids(m) if m.unit else m.matcher.scan()
        self.ctx.log(Level.INFO, "errd", f"Monitoring {m.proc.name} ({len(m.pids)} running)")
        if m.problem() is not None:
            m.grace = asyncio.get_running_loop().call_later(ENABLE_GRACE_S, self._grace_over, m)
        self._judge(m)

    def _stop(self, m: ProcMonitor) -> None:
        m.running, m.state = False, None
        m.pids.clear()
        if m.grace is not None:
            m.grace.cancel()
            m.grace = None
        if m.requery is not None:
            m.requery.cancel()
            m.requery = None
        self.ctx.resources.set(m.resource, UNKNOWN)

    # -- verdicts

    def _judge(self, m: ProcMonitor) -> None:
        problem = m.problem()
        if problem is None:
            if m.grace is not None:
                m.grace.cancel()
                m.grace = None
            if m.state == DOWN:
                self.ctx.log(Level.EVENT, "errd", f"{m.proc.name} running again ({len(m.pids)})")
            m.state = UP
            self.ctx.resources.set(m.resource, UP)
        elif m.state != DOWN and m.grace is None:
            m.state = DOWN
            self.ctx.resources.set(m.resource, DOWN)
            self.ctx.log(Level.EVENT, "errd", problem)
            task = asyncio.get_running_loop().create_task(self._act(m))
            # Not cancelled by a later disable: the action itself may disable errd (restart).
            self._actions.add(task)
            task.add_done_callback(self._actions.discard)

    def _grace_over(self, m: ProcMonitor) -> None:
        m.grace = None
        if m.running:
            self._judge(m)

    async def _act(self, m: ProcMonitor) -> None:
        action = m.proc.action
        try:
            if action in ACTIONS:
                await self.ctx.act(action, f"errd {m.proc.name}")
            else:
                await self.ctx.run_script(action)
        except Exception as exc:
            self.ctx.log(Level.CRITICAL, "errd", f"Action {action} for {m.proc.name} failed: {exc}")

    # -- process events

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, Exit):
            if ev.pid == ev.tgid:
                for m in self.monitors:
                    if m.running and ev.tgid in m.pids:
                        m.pids.discard(ev.tgid)
                        self._judge(m)
        elif isinstance(ev, Fork):
            if ev.child_pid == ev.child_tgid:  # a process, not a thread
                info = ProcInfo(ev.child_tgid)
                for m in self.monitors:
                    if m.running and not m.unit and ev.parent_tgid in m.pids and m.matcher.matches(info):
                        m.pids.add(ev.child_tgid)
                        self._judge(m)
        elif isinstance(ev, Exec | Comm) and ev.pid == ev.tgid:
            info = ProcInfo(ev.tgid)
            for m in self.monitors:
                if not m.running:
                    continue
                if m.unit:
                    if info.cgroup.endswith(f"/{m.unit}"):
                        self._ask_systemd(m)
                elif m.matcher.matches(info) != (ev.tgid in m.pids):
                    m.pids ^= {ev.tgid}
                    self._judge(m)

    def _on_overrun(self) -> None:
        self.ctx.log(Level.INFO, "errd", "Process events were lost; counting again from /proc")
        for m in self.monitors:
            if m.running:
                if m.unit:
                    self._ask_systemd(m)
                else:
                    m.pids = m.matcher.scan()
                    self._judge(m)

    # -- systemd services

    def _ask_systemd(self, m: ProcMonitor) -> None:
        if m.requery is None or m.requery.done():
            m.requery = asyncio.get_running_loop().create_task(self._requery(m))

    async def _requery(self, m: ProcMonitor) -> None:
        pids = await self._main_pids(m)
        if m.running:
            m.pids = pids
            self._judge(m)

    async def _main_pids(self, m: ProcMonitor) -> set[int]:
        assert m.unit is not None
        proc = await asyncio.create_subprocess_exec(
            "systemctl", "show", "--property=MainPID", "--value", "--", m.unit,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        try:
            pid = int(out.strip() or 0)
        except ValueError:
            pid = 0
        return {pid} if pid > 0 and alive(pid, self._netns) else set()
