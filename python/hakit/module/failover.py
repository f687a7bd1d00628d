"""The failover machine: <failover> rules and the generated ones, evaluated on
every resource change, and the maxloop budget of automatic actions.

A resource pattern with `*` is true when every matching resource satisfies the
comparison (`heartbeat.* == down`: all heartbeats lost), with `?` when at least
one does (`ip.? == down`: some address lost); a pattern that matches nothing is
false.  restart, stopstart, stop and swap fire once, when their rule becomes
true.  wait and prim hold while their rule is true: the module waits as long as
a wait rule holds, and wants to be primary as long as a prim rule holds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from hakit.config.rules import BoolOp, Cmp, Expr, Not, Rule
from hakit.runtime.resources import Resources

EDGE_ACTIONS = ("restart", "stopstart", "stop", "swap")
LEVEL_ACTIONS = ("wait", "prim")

HEARTBEAT_RULE = Rule("heartbeat_failure", Cmp("heartbeat.*", "==", "down"), "prim", 0)
# A mirror's hakit-rfs died: the restart repairs the replication in place
# (MirrorDriver._repair_replication) and restarts the application over it.
RFS_RULE = Rule("rfs_failure", Cmp("rfs.daemon", "==", "down"), "restart", 0)


def evaluate(expr: Expr, res: Resources) -> bool:
    if isinstance(expr, Not):
        return not evaluate(expr.expr, res)
    if isinstance(expr, BoolOp):
        left = evaluate(expr.left, res)
        if expr.op == "&&":
            return left and evaluate(expr.right, res)
        return left or evaluate(expr.right, res)
    if "*" in expr.resource or "?" in expr.resource:
        values = list(res.matching(expr.resource).values())
        if not values:
            return False
        hits = [(v == expr.value) == (expr.op == "==") for v in values]
        return all(hits) if "*" in expr.resource else any(hits)
    value = res.get(expr.resource)
    if value is None:
        return False
    return (value == expr.value) == (expr.op == "==")


class FailoverMachine:
    def __init__(self, rules: Iterable[Rule], resources: Resources,
                 fire: Callable[[Rule], None], on_level: Callable[[], None]) -> None:
        self.rules = list(rules)
        self.resources = resources
        self.fire = fire
        self.on_level = on_level
        self.enabled = True
        self.true: set[str] = set()
        resources.subscribe(lambda *_: self.evaluate())

    def evaluate(self) -> None:
        now_true = {r.label for r in self.rules if evaluate(r.expr, self.resources)}
        rising = [r for r in self.rules if r.label in now_true - self.true]
        level_changed = any(
            r.action in LEVEL_ACTIONS for r in self.rules if r.label in now_true ^ self.true
        )
        self.true = now_true
        for r in rising:
            self.resources.set(f"rule.{r.label}", "fired")
        for r in self.rules:
            if r.label not in now_true and self.resources.get(f"rule.{r.label}") == "fired":
                self.resources.set(f"rule.{r.label}", "idle")
        if not self.enabled:
            return
        for r in rising:
            if r.action in EDGE_ACTIONS or r.action == "wait":
                self.fire(r)
        if level_changed:
            self.on_level()

    def holding(self, action: str) -> list[Rule]:
        """Level rules of this action that hold now (none while failover is off)."""
        if not self.enabled:
            return []
        return [r for r in self.rules if r.action == action and r.label in self.true]


class LoopBudget:
    """maxloop automatic actions per loop_interval; the next one stops the module."""

    def __init__(self, maxloop: int, interval: float) -> None:
        self.maxloop = maxloop
        self.interval = interval
        self.stamps: deque[float] = deque()

    def spend(self) -> bool:
        """Count one automatic action; False when it exceeds the budget."""
        now = time.monotonic()
        while self.stamps and now - self.stamps[0] > self.interval:
            self.stamps.popleft()
        self.stamps.append(now)
        return len(self.stamps) <= self.maxloop

    def reset(self) -> None:
        self.stamps.clear()
