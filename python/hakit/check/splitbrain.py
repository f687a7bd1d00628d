"""The split-brain witness: consulted by the module's automaton only when every heartbeat
is lost, so that of two nodes that no longer see each other, only one stays primary.

exec="ping" (the default): the witness is the address in `arg`, reachable when it
answers an ICMP echo.  Otherwise `exec` is a program of the module's bin/ (or an
absolute path) run with `arg` split like a shell would: exit code 0 means reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal

from hakit.check.base import CheckContext
from hakit.check.ping import ping
from hakit.config.module_model import SplitbrainChecker
from hakit.errors import HakitError
from hakit.store.module_store import Level


class Witness:
    def __init__(self, ctx: CheckContext) -> None:
        checks = ctx.config.service.checks
        cfg = checks.splitbrain if checks is not None else None
        if cfg is None:
            raise HakitError(f"module {ctx.module} has no <splitbrain> witness")
        self.ctx = ctx
        self.cfg: SplitbrainChecker = cfg

    async def reachable(self, timeout: float) -> bool:
        if self.cfg.exec == "ping":
            return await ping(self.cfg.arg, timeout)
        bindir = self.ctx.paths.module_bin(self.ctx.module)
        program = self.cfg.exec if os.path.isabs(self.cfg.exec) else str(bindir / self.cfg.exec)
        try:
            proc = await asyncio.create_subprocess_exec(
                program, *shlex.split(self.cfg.arg), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                env=self.ctx.env, cwd=str(bindir), start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            self.ctx.log(Level.CRITICAL, "check", f"Split-brain witness {program} cannot run: {exc}")
            return False
        try:
            return await asyncio.wait_for(proc.wait(), timeout) == 0
        except TimeoutError:
            return False
        finally:
            # A witness test that hangs, and whatever it started, must not outlive the question.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.returncode is None:
                await proc.wait()
