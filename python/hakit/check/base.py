"""What every checker implements, and what the module process gives it.

A checker publishes one resource (`tcp.web`, `intf.eth0`, ...) with the values
up / down (unknown while it does not run).  It never acts by itself: the failover
rules read the resource; the rule generated for its `action=` is `rule_label`.
Checkers run only in the states their `when` class allows; the module process
starts and stops them as it moves between states.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from hakit.config.module_model import ModuleConfig
from hakit.paths import Paths
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import UNKNOWN, Resources
from hakit.store.module_store import Level

UP = "up"
DOWN = "down"

# Classes the module enables as it moves between states; see runs_in().
PRE, PRIM, SECOND, BOTH = "pre", "prim", "second", "both"

# (action, origin) -> None: ask the module's automaton for restart/stopstart/stop/wait/swap/prim
Act = Callable[[str, str], Awaitable[None]]
# (module, node address or None for this node, port) -> (state, status), or None when unreachable
ModuleStateQuery = Callable[[str, str | None, int], Awaitable[tuple[str, str] | None]]


@dataclass
class CheckContext:
    module: str
    node: str  # this node's name in cluster.xml
    paths: Paths
    config: ModuleConfig
    resources: Resources
    log: ModuleLog
    act: Act
    run_script: Callable[[str], Awaitable[int | None]]  # a script of the module's bin/, its exit code
    env: dict[str, str]  # the scripts' environment, for custom checkers
    module_state: ModuleStateQuery


class Checker(ABC):
    """One resource, checked while started."""

    kind: str  # tcp, ping, intf, ip, custom, module
    rule_prefix: str  # t_, p_, i_, ip_, c_, m_ (the model's RULE_PREFIX)
    ident: str
    when: str  # pre, prim, second, both
    action: str | None  # generated rule's action; None: the user writes the rule

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx

    @property
    def resource(self) -> str:
        return f"{self.kind}.{self.ident}"

    @property
    def rule_label(self) -> str:
        return f"{self.rule_prefix}{self.ident}"

    def publish(self, value: str) -> None:
        self.ctx.resources.set(self.resource, value)

    @abstractmethod
    async def start(self) -> None:
        """Begin checking; publish the first result as soon as it is known."""

    async def stop(self) -> None:
        """Stop checking; the resource reads unknown until the next start."""
        self.publish(UNKNOWN)

    def dump(self) -> dict[str, Any]:
        """Settings, for `hakit state -v` and to compare checkers on reconfiguration."""
        return {"kind": self.kind, "ident": self.ident, "when": self.when, "action": self.action}


def runs_in(when: str, enabled: set[str]) -> bool:
    """Whether something of class `when` runs while the module has `enabled` on.

    pre: from the module's start to its end.  prim / second: on that side of a mirror
    (light modules are a mirror's primary); both: on either side.  A farm node enables
    "both", which runs the prim and second ones too.
    """
    if when == PRE:
        return PRE in enabled
    if BOTH in enabled:
        return when in (PRIM, SECOND, BOTH)
    if when == BOTH:
        return PRIM in enabled or SECOND in enabled
    return when in enabled


class TaskChecker(Checker):
    """A checker whose work is one asyncio task, cancelled by stop()."""

    _task: asyncio.Task[None] | None = None

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.create_task(self._guarded(work), name=f"check {self.resource}")

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:
            # A checker that died must not leave a stale "up" for the rules.
            self.ctx.log(Level.CRITICAL, "check", f"Checker {self.resource} failed: {exc}")
            self.publish(UNKNOWN)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # unlike `await task`, keeps a cancel of stop() itself
        await super().stop()


class PeriodicChecker(TaskChecker):
    """Tests every `interval` seconds; the resource is the last test's result."""

    interval: float

    async def start(self) -> None:
        self.spawn(self._loop())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            self.publish(UP if await self.probe() else DOWN)
            await asyncio.sleep(max(0.0, began + self.interval - loop.time()))

    @abstractmethod
    async def probe(self) -> bool:
        """One test; True when the resource is up."""
