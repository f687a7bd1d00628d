"""Shared by the tests: run the hakit CLI, build module archives, run a node daemon, list a
simulated node's processes, wait for a condition."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from hakit.config.safe_archive import pack


def hakit(*args: str, env: Mapping[str, str] | None = None, check: bool = False,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed `hakit` command as a user would."""
    run = subprocess.run(
        [sys.executable, "-m", "hakit.cli.main", *args],
        capture_output=True, text=True, env=dict(env or os.environ), timeout=timeout,
    )
    if check and run.returncode != 0:
        raise AssertionError(f"hakit {' '.join(args)} failed ({run.returncode}): {run.stderr}")
    return run


def make_module(root: Path, userconfig: str, scripts: Mapping[str, str]) -> Path:
    """A .safe archive with this userconfig.xml and these bin/ scripts."""
    src = root / "src"
    (src / "conf").mkdir(parents=True)
    (src / "bin").mkdir()
    (src / "conf" / "userconfig.xml").write_text(userconfig)
    for name, body in scripts.items():
        path = src / "bin" / name
        path.write_text(body)
        path.chmod(0o755)
    out = root / "module.safe"
    pack(src, out)
    return out


@contextlib.contextmanager
def running_daemon(env: Mapping[str, str], run_dir: Path, cwd: Path | None = None
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """hakitd under a relocated HAKIT_ROOT, stopped (by its pid) at the end; started as
    its installed command, from cwd when given."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / "hakitd")], env=dict(env), cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sock = run_dir / "hakitd.sock"
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"hakitd did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def node_pids(sim, node: str, comm: str | None = None) -> list[str]:
    """The pids (as the host numbers them) of the node's processes, only those named
    `comm` when given; a process gone meanwhile is left out."""
    found = []
    for pid in (sim.cgroup / node / "cgroup.procs").read_text().split():
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm is None or name == comm:
            found.append(pid)
    return found


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 15.0) -> float:
    """Seconds until cond() held; fails naming `what` after timeout seconds."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start
