"""hakit-rfs processes on this host, no simulated cluster (test_rfs_fs.py, test_rfs_chan.py):
the fixtures `base` and `rfs` (a plugin of conftest.py), fuse_mounted, free_port."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hakit.rfs.daemon import rfs_binary


def fuse_mounted(path: Path) -> bool:
    """Whether a hakit-rfs mount sits on path (any depth of the stack)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ")
        if line.split()[4] == str(path) and fields[1].startswith("fuse.hakit-rfs "):
            return True
    return False


class Rfs:
    """One hakit-rfs process; stopped (or killed by its pid) and never left mounted."""

    serial = itertools.count()

    def __init__(self, tmp: Path, role: str, directory: Path, *extra: str) -> None:
        self.dir = directory
        name = f"{directory.name}-{next(self.serial)}"
        self.ctl = tmp / f"{name}.sock"
        self.log = tmp / f"{name}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(rfs_binary()), role, "--dir", str(directory), "--ctl", str(self.ctl), *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        # The control thread answers only once the mount is up.
        deadline = time.monotonic() + 10
        while not (self.ctl.exists() and self.ready()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"hakit-rfs {role} did not start: {self.log.read_text()}")
            time.sleep(0.01)

    def ready(self) -> bool:
        """Between bind and listen the socket exists but refuses connections."""
        try:
            return self.cmd("stats").startswith("ok ")
        except OSError:
            return False

    def cmd(self, line: str) -> str:
        """The reply line, past the events; "" when the process closed the connection."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(self.ctl))
            s.sendall(line.encode() + b"\n")
            lines = s.makefile()
            while (reply := lines.readline().strip()).startswith("event "):
                pass
            return reply

    def stats(self) -> dict[str, int | str]:
        reply = self.cmd("stats")
        assert reply.startswith("ok "), reply
        pairs = (kv.split("=", 1) for kv in reply.split()[1:])
        return {k: int(v) if v.isdigit() else v for k, v in pairs}

    def stop(self) -> int:
        assert self.cmd("stop") == "ok"
        return self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, AssertionError):
                self.cmd("stop")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 5
        while fuse_mounted(self.dir) and time.monotonic() < deadline:
            time.sleep(0.02)  # a killed server's watchdog unmounts
        if fuse_mounted(self.dir):
            subprocess.run(["umount", "-l", str(self.dir)], check=False)
            raise AssertionError(f"{self.dir} was left mounted")


@pytest.fixture
def base() -> Iterator[Path]:
    """Where the test's directories live: traversable by the unprivileged user of as_user
    (pytest's tmp_path is under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="hakit-rfs-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def rfs(base: Path, tmp_path: Path) -> Iterator[Any]:
    """start(role, name, *options) -> Rfs serving base/name; all stopped at the end."""
    started: list[Rfs] = []

    def start(role: str, name: str, *extra: str) -> Rfs:
        with contextlib.suppress(FileExistsError):           # also when a dead mount sits on it
            (base / name).mkdir()
        started.append(Rfs(tmp_path, role, base / name, *extra))
        return started[-1]

    yield start
    for r in reversed(started):
        r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
