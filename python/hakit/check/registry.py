"""Every checker of one module: built from its configuration, started and stopped by class.

The module process owns one Checks.  It enables the classes as it moves between
states (base.runs_in says which checker runs where):

    enable("pre")      at start, before prestart, until the module stops
    enable("prim")     after start_prim, until before stop_prim (a light module too)
    enable("second")   after start_second, until before stop_second
    enable("both")     a farm node, after start_both: prim and second checkers run too

and calls stop_all() when it stops.  Checkers never act: rules() gives the failover
rules generated for their action= attributes; errd alone acts by itself (see errd.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hakit.check.admin import AdminFlags
from hakit.check.base import DOWN, UP, CheckContext, Checker, runs_in
from hakit.check.custom import CustomCheck
from hakit.check.errd import Errd
from hakit.check.intf import IntfCheck, interface_holding
from hakit.check.ip import IpCheck
from hakit.check.module import ModuleCheck
from hakit.check.ping import PingCheck
from hakit.check.tcp import TcpCheck
from hakit.config.module_model import CHECKERS, Interface, VirtualAddr
from hakit.config.rules import ACTIONS, Cmp, Rule
from hakit.errors import HakitError
from hakit.store.module_store import Level


def default_when(kind: str, mode: str) -> str:
    """Where a checker runs when its `when` is not given."""
    mirror, farm = next(c for c in CHECKERS if kind == c.RESOURCE).DEFAULT_WHEN
    return farm if mode == "farm" else mirror


class Checks:
    def __init__(self, ctx: CheckContext, mode: str) -> None:
        self.ctx = ctx
        self.mode = mode
        self.checkers = self._build()
        admin = AdminFlags.load(ctx.paths, ctx.module)
        self.errd = Errd(ctx, admin.errd)
        self._checker_on = admin.checker == "on"
        self._enabled: set[str] = set()
        self._running: set[Checker] = set()
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()

    # -- building

    def _build(self) -> list[Checker]:
        svc, ctx = self.ctx.config.service, self.ctx
        out: list[Checker] = []
        if (c := svc.checks) is not None:
            out += [TcpCheck(ctx, t, t.when or default_when("tcp", self.mode)) for t in c.tcp]
            out += [PingCheck(ctx, p, p.when or default_when("ping", self.mode)) for p in c.ping]
            out += [IntfCheck(ctx, i.ident, i.to.name, i.when or default_when("intf", self.mode), i.action)
                    for i in c.intf]
            out += [IpCheck(ctx, i.ident, i.to.addr, i.when or default_when("ip", self.mode), i.action)
                    for i in c.ip]
            out += [CustomCheck(ctx, u, u.when or default_when("custom", self.mode)) for u in c.custom]
            out += [ModuleCheck(ctx, m, m.when or default_when("module", self.mode)) for m in c.module]
        for checker in out:
            if checker.action is not None and checker.action not in ACTIONS:
                raise HakitError(
                    f"<{checker.kind} ident=\"{checker.ident}\"> action=\"{checker.action}\": a checker's "
                    f"action is one of {', '.join(ACTIONS)} (only <errd> runs scripts)"
                )
        taken = {c.resource for c in out}
        for checker in self._generated():
            # A checker the user wrote for the same interface or address wins.
            if checker.resource not in taken:
                taken.add(checker.resource)
                out.append(checker)
        return out

    def _generated(self) -> list[Checker]:
        vip = self.ctx.config.service.vip
        out: list[Checker] = []
        for itf in vip.interfaces.interfaces if vip is not None and vip.interfaces else ():
            # The farm's shared VIP (<virtual_interface>) is checked by the farm VIP code.
            addrs = itf.real.addrs if itf.real is not None else ()
            if itf.check:
                first = (itf.real or itf.virtual).addrs[0].addr  # type: ignore[union-attr]
                name = itf.name or interface_holding(first)
                if name is None:
                    raise HakitError(
                        f"<interface check=\"on\">: no interface of this node has a subnet holding {first}; "
                        "name it with <interface name=\"…\">"
                    )
                out.append(IntfCheck(self.ctx, name, name, default_when("intf", self.mode),
                                     Interface.GENERATED_ACTION))
            for a in addrs:
                if a.check:
                    out.append(IpCheck(self.ctx, a.addr, a.addr, default_when("ip", self.mode),
                                       VirtualAddr.GENERATED_ACTION))
        return out

    def rules(self) -> list[Rule]:
        """One rule per checker with an action: `<prefix><ident>: if (<resource> == down) then action();`"""
        return [Rule(c.rule_label, Cmp(c.resource, "==", DOWN), c.action, 0)
                for c in self.checkers if c.action is not None]

    # -- running

    async def enable(self, klass: str) -> None:
        self._enabled.add(klass)
        await self.errd.enable(klass)
        await self._reconcile()

    async def disable(self, klass: str) -> None:
        self._enabled.discard(klass)
        await self.errd.disable(klass)
        await self._reconcile()

    async def stop_all(self) -> None:
        self._enabled.clear()
        await self.errd.stop_all()
        await self._reconcile()

    def apply_admin(self, flags: AdminFlags) -> asyncio.Task[None] | None:
        """`hakit checker on|off` and `hakit errd off|on|suspend|resume`, read from admin.json.

        Callable from synchronous code: checkers and monitors stop or start in a task of
        the running event loop, returned for those who want to wait for it (None when no
        loop runs: the next enable() applies the flags)."""
        if self._checker_on != (flags.checker == "on"):
            self.ctx.log(Level.EVENT, "check", f"Checkers turned {flags.checker}")
        if self.errd.admin != flags.errd:
            self.ctx.log(Level.EVENT, "errd", f"Process monitoring {flags.errd}")
        self._checker_on = flags.checker == "on"
        self.errd.set_admin(flags.errd)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        task = loop.create_task(self._apply_admin())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _apply_admin(self) -> None:
        try:
            await self.errd.reconcile()
            await self._reconcile()
        except HakitError as exc:
            self.ctx.log(Level.CRITICAL, "check", f"Applying the checkers' admin switches: {exc}")

    def set(self, resource: str, value: str) -> None:
        """`hakit set -r custom.<ident> -v up|down`, from a running custom checker."""
        checker = next((c for c in self.checkers if c.resource == resource), None)
        if not isinstance(checker, CustomCheck):
            custom = ", ".join(c.resource for c in self.checkers if isinstance(c, CustomCheck)) or "none"
            raise HakitError(f"{resource} is not a custom checker's resource (these are: {custom})")
        if value not in (UP, DOWN):
            raise HakitError(f"a checker's value is {UP} or {DOWN}, not {value!r}")
        if checker not in self._running:
            raise HakitError(f"custom checker {checker.ident} is not running now; value ignored")
        checker.publish(value)

    def dump(self) -> list[dict[str, Any]]:
        return [
            {**c.dump(), "resource": c.resource, "running": c in self._running,
             "value": self.ctx.resources.get(c.resource)}
            for c in self.checkers
        ] + self.errd.dump()

    async def _reconcile(self) -> None:
        async with self._lock:
            wanted = {c for c in self.checkers if self._checker_on and runs_in(c.when, self._enabled)}
            for c in [c for c in self.checkers if c in self._running and c not in wanted]:
                self._running.discard(c)
                await c.stop()
            failures = []
            for c in [c for c in self.checkers if c in wanted and c not in self._running]:
                try:
                    await c.start()
                except (HakitError, OSError) as exc:
                    self.ctx.log(Level.CRITICAL, "check", f"Checker {c.resource} cannot start: {exc}")
                    failures.append(f"{c.resource}: {exc}")
                    continue
                self._running.add(c)
            if failures:
                raise HakitError("checkers failed to start: " + "; ".join(failures))
