"""Running a module's scripts (prestart, start_prim, stop_prim, ...).

Each run gets the module's environment (SafeKit's variables and the <var> values),
a time limit, its own log file userlog_<YYYY-MM-DDThhmmss>_<script>.ulog, and an S
line in the module log.  A script that outlives its limit is killed with its whole
process group, so a hung stop never blocks a failover.  How long its last run took is
resource script.<script>.duration (seconds), for monitoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hakit.config.module_model import ModuleConfig
from hakit.files import open_private_append
from hakit.paths import Paths
from hakit.runtime.log import ModuleLog
from hakit.runtime.procgroup import kill_group
from hakit.store.module_store import Level

STOP_SCRIPTS = ("stop_prim", "stop_second", "stop_both", "poststop")


@dataclass(frozen=True)
class ScriptResult:
    script: str
    code: int | None  # None: not present; -signal when killed
    log: Path | None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.code in (None, 0)


def hakit_bin_dir() -> Path:
    """Directory of the commands scripts call: `hakit`, and SafeKit's `safekit` and
    `exitcode` (exported as SAFE and SAFEBIN): those of this installation, beside its
    interpreter (a build's venv, the package's /usr/lib/hakit/bin)."""
    here = Path(sys.executable).parent
    if (here / "safekit").exists():
        return here
    found = shutil.which("hakit")
    return Path(found).parent if found else here


def environment(module: str, config: ModuleConfig, paths: Paths) -> dict[str, str]:
    env = dict(os.environ)
    bindir = hakit_bin_dir()
    env.update(
        {
            "SAFE": str(bindir),
            "SAFEBIN": str(bindir),
            "SAFEVAR": str(paths.lib),
            "SAFEMODULE": module,
            "SAFEUSERBIN": str(paths.module_bin(module)),
            "SAFEUSERVAR": str(paths.module_var(module)),
            "SAFEUSERLOG": str(paths.module_log(module)),
            "HAKIT_MODULE": module,
            "HAKIT_MODE": config.service.mode,
            "PATH": f"{bindir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        }
    )
    user = config.service.user
    for var in user.vars if user else ():
        env[var.name] = var.value
    return env


class ScriptRunner:
    def __init__(self, module: str, config: ModuleConfig, paths: Paths, log: ModuleLog,
                 record: Callable[[str, str], object] | None = None) -> None:
        self.module = module
        self.config = config
        self.paths = paths
        self.log = log
        self.record = record  # (resource, value): the module's resources

    def timeout(self, script: str, args: tuple[str, ...]) -> float:
        user = self.config.service.user
        assert user is not None
        if script in STOP_SCRIPTS:
            return user.forcestoptimeout if "force" in args else user.nicestoptimeout
        return user.starttimeout

    async def run(self, script: str, *args: str) -> ScriptResult:
        user = self.config.service.user
        path = self.paths.module_bin(self.module) / script
        # Without <user>, SafeKit runs no script at all.
        if user is None or not path.is_file():
            return ScriptResult(script, None, None)
        logdir = self.paths.module_log(self.module)
        logdir.mkdir(parents=True, exist_ok=True)
        logfile = None
        if user.logging == "userlog":
            logfile = logdir / f"userlog_{time.strftime('%Y-%m-%dT%H%M%S')}_{script}.ulog"
        self.log(Level.SCRIPT, "script", f"Script {script} {' '.join(args)}".rstrip())
        limit = self.timeout(script, args)
        out = open_private_append(logfile) if logfile else open(os.devnull, "wb")  # noqa: SIM115
        with out:
            began = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    str(path), *args,
                    stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                    env=environment(self.module, self.config, self.paths),
                    cwd=str(self.paths.module_bin(self.module)),
                    start_new_session=True,
                )
            except OSError as exc:
                self.log(Level.CRITICAL, "script", f"Script {script} cannot run: {exc.strerror}")
                return ScriptResult(script, 126, logfile)
            timed_out = False
            try:
                code = await asyncio.wait_for(proc.wait(), limit)
            except TimeoutError:
                timed_out = True
                code = await kill_group(proc)
        if self.record is not None:
            self.record(f"script.{script}.duration", f"{time.monotonic() - began:.3f}")
        if timed_out:
            self.log(Level.CRITICAL, "script", f"Script {script} killed after {limit:g} s time limit")
        elif code != 0:
            self.log(Level.CRITICAL, "script", f"Script {script} failed with exit code {code}")
        else:
            self.log(Level.INFO, "script", f"Script {script} ended")
        self._prune(logdir, user.userlogsize * 1024)
        return ScriptResult(script, code, logfile, timed_out)

    @staticmethod
    def _prune(logdir: Path, budget: int) -> None:
        """Delete the oldest script logs beyond the module's size budget."""
        logs = sorted(logdir.glob("userlog_*.ulog"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for i, p in enumerate(logs):
            total += p.stat().st_size
            if total > budget and i > 0:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
