"""The replication stream and receiver (native/rfs: repl_send.c, repl_recv.c, apply.c)
through their C tests.

The programs in native/rfs/tests link the core's own sources under ASan and UBSan
(`make rfs-asan`, also run by `make test`): an in-process primary and receiver over
localhost TCP applying every opcode, many threads racing renames against writes,
frames that are garbage and paths that try to leave the root, peers that stop
answering, and peers refused by the stream's key and TLS checks (test_rfs_chan).  A
program fails on its first wrong result; a sanitizer report fails it too, even one the
program itself would not notice (a leak at exit, a report from a thread).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = [
    "test_rfs_stream",
    "test_rfs_guard",
    "test_rfs_detach",
    "test_rfs_query",
    "test_rfs_exclude",
    "test_rfs_dirty",
    "test_rfs_chan",
]

# root: chown, device nodes and trusted.* xattrs are part of what is replicated.
pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def programs() -> Path:
    made = subprocess.run(["make", "-s", "-C", str(REPO), "rfs-asan"], capture_output=True, text=True)
    assert made.returncode == 0, f"make rfs-asan failed:\n{made.stdout}{made.stderr}"
    return REPO / "build" / "rfs-asan"


@pytest.mark.parametrize("name", PROGRAMS)
def test_rfs_core(programs: Path, name: str, tmp_path: Path) -> None:
    reports = tmp_path / "sanitizer"
    work = tmp_path / "work"
    work.mkdir()
    env = dict(
        os.environ,
        TMPDIR=str(work),
        ASAN_OPTIONS=f"log_path={reports}:detect_leaks=1:abort_on_error=0",
        UBSAN_OPTIONS=f"log_path={reports}:print_stacktrace=1:halt_on_error=1",
    )
    run = subprocess.run([str(programs / name)], env=env, capture_output=True, text=True, timeout=60)
    found = sorted(tmp_path.glob("sanitizer*"))
    report = "\n".join(p.read_text(errors="replace") for p in found)
    assert not found, f"{name}: sanitizer report:\n{report}"
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), (
        f"{name} exited {run.returncode}\n{run.stdout}{run.stderr}"
    )
    assert not list(work.iterdir()), f"{name} left {sorted(p.name for p in work.iterdir())}"
