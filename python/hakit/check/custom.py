"""custom checker: a long-running program of the module that reports its own resource.

The program (bin/<exec>, or an absolute path, with <custom arg> split like a shell
would) runs with the scripts' environment, in bin/, in its own process group, and
says `hakit set -m AM -r custom.<ident> -v up|down` whenever its verdict changes.
hakit only keeps it running: restarted RESTART_DELAY_S after it exits, killed with
its whole group when the checker stops.  Its output goes to
/var/log/hakit/modules/AM/custom_<ident>.log (the current run's only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from pathlib import Path
from typing import Any

from hakit.check.base import UNKNOWN, CheckContext, TaskChecker
from hakit.config.module_model import CustomChecker
from hakit.errors import HakitError
from hakit.runtime.procgroup import kill_group
from hakit.store.module_store import Level

RESTART_DELAY_S = 1.0


class CustomCheck(TaskChecker):
    kind, rule_prefix = CustomChecker.RESOURCE, CustomChecker.RULE_PREFIX

    def __init__(self, ctx: CheckContext, cfg: CustomChecker, when: str) -> None:
        super().__init__(ctx)
        self.ident, self.when, self.action = cfg.ident, when, cfg.action
        self.exec, self.arg = cfg.exec, cfg.arg
        self.pid: int | None = None  # of the running program, for tests and `hakit state -v`

    @property
    def program(self) -> Path:
        bindir = self.ctx.paths.module_bin(self.ctx.module)
        return Path(self.exec) if os.path.isabs(self.exec) else bindir / self.exec

    async def start(self) -> None:
        if not os.access(self.program, os.X_OK):
            raise HakitError(f"custom checker {self.ident}: {self.program} is not an executable program")
        try:
            argv = [str(self.program), *shlex.split(self.arg)]
        except ValueError as exc:
            raise HakitError(f"custom checker {self.ident}: arg: {exc}") from None
        # Whatever a previous run reported is no verdict on this one.
        self.publish(UNKNOWN)
        self.spawn(self._supervise(argv))

    async def _supervise(self, argv: list[str]) -> None:
        logdir = self.ctx.paths.module_log(self.ctx.module)
        logdir.mkdir(parents=True, exist_ok=True)
        while True:
            with open(logdir / f"custom_{self.ident}.log", "wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                    env=self.ctx.env, cwd=str(self.ctx.paths.module_bin(self.ctx.module)),
                    start_new_session=True,
                )
            self.pid = proc.pid
            try:
                code = await proc.wait()
            except asyncio.CancelledError:
                await kill_group(proc)
                raise
            finally:
                self.pid = None
            # What it left behind in its group (a `sleep` it was waiting on) goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            self.ctx.log(Level.CRITICAL, "check",
                         f"Custom checker {self.ident} exited (code {code}); restarting it")
            await asyncio.sleep(RESTART_DELAY_S)

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "exec": self.exec, "arg": self.arg, "pid": self.pid}
