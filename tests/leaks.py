"""What a test must not leave behind, as uvloop's test base checks it: open file
descriptors (conftest.py compares them around every test), asyncio tasks still pending
when a test's own loop ends (run_loop, assert_no_tasks), and simulated clusters
(sim_support.session_leftovers, at the session's end)."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def open_fds() -> dict[int, str]:
    """This process's descriptors and what each is open on."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # listdir's own descriptor, closed by now
    return fds


def open_process_wide_fds() -> None:
    """Open what a library opens once per process, on first use, and keeps: uvloop's
    first loop creates a pipe that lives as long as the process.  Done before the first
    test, it is in every test's `before`."""
    async def nothing() -> None:
        pass

    uvloop.run(nothing())


def fds_opened_since(before: dict[int, str]) -> list[str]:
    """Descriptors open now that were not before, once garbage that still holds one (a
    dropped Popen's pipe, a socket in a cycle) is collected."""
    gc.collect()
    return [f"fd {fd} -> {target}" for fd, target in sorted(open_fds().items()) if before.get(fd) != target]


def assert_no_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """The loop's tasks all ended: one still pending would be cancelled unseen when the
    loop closes, hiding work the code under test forgot to wait for or stop."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if pending:
        raise AssertionError(f"{len(pending)} asyncio task(s) left pending: "
                             + "; ".join(repr(t.get_coro()) for t in pending))


def run_loop(coro: Coroutine[Any, Any, T],
             loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> T:
    """asyncio.run(coro) that fails when tasks are left pending, whether coro returned or
    raised (a raising coroutine may be what the test expects)."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            return runner.run(coro)
        finally:
            assert_no_tasks(runner.get_loop())
