"""Ending a child together with everything it started (scripts, custom checkers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL


async def kill_group(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM to the child's process group, SIGKILL if it outlives the grace; its status."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
        except TimeoutError:
            continue
    return await proc.wait()
