"""This node's processes as /proc shows them: name (comm), command line, network namespace.

A node's processes are those in the caller's network namespace.  On a real host that
is every process; on a simulated cluster all nodes share one pid namespace, and
counting another node's `mybin` would hide this node's failure.  errd and
`hakit kill` both select processes through ProcMatcher.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from hakit import linear_re
from hakit.errors import HakitError

TASK_COMM_LEN = 16  # the kernel keeps 15 characters of a process name
CMDLINE_MAX = 64 << 10  # of a command line, what argregex sees: bounded work per process


def netns_of(pid: int | str) -> tuple[int, int] | None:
    """Identity of a process's network namespace; None once it is gone (or a zombie)."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def own_netns() -> tuple[int, int]:
    ns = netns_of("self")
    assert ns is not None
    return ns


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _read(path: str, limit: int = -1) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def uid_of(user: str) -> int:
    """A <proc user> as a uid: a user name of this node, or a number."""
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise HakitError(f"<proc user=\"{user}\">: no such user on this node") from None


class ProcInfo:
    """One process, read lazily: a matcher usually needs only the name."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    @cached_property
    def comm(self) -> str | None:
        raw = _read(f"/proc/{self.pid}/comm")
        return raw.decode(errors="replace").rstrip("\n") if raw is not None else None

    @cached_property
    def cmdline(self) -> str:
        raw = _read(f"/proc/{self.pid}/cmdline", CMDLINE_MAX) or b""
        return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")

    @cached_property
    def uid(self) -> int | None:
        """The process's real owner (the owner of its /proc directory)."""
        try:
            return os.stat(f"/proc/{self.pid}").st_uid
        except OSError:
            return None

    @cached_property
    def netns(self) -> tuple[int, int] | None:
        return netns_of(self.pid)

    @cached_property
    def cgroup(self) -> str:
        """The process's cgroup v2 path ("" when unknown)."""
        raw = _read(f"/proc/{self.pid}/cgroup") or b""
        for line in raw.decode(errors="replace").splitlines():
            if line.startswith("0::"):
                return line[3:]
        return ""


@dataclass(frozen=True)
class ProcMatcher:
    """Processes named `name` (comm, as ps shows it), or whose name matches nameregex,
    and whose command line matches argregex, in the network namespace `netns`, owned by
    uid when given.  Regular expressions match anywhere in the text (anchor them with ^
    and $), in time linear in it (RE2): names and command lines are any user's to choose."""

    name: str | None
    nameregex: str | None
    argregex: str | None
    netns: tuple[int, int]
    uid: int | None = None

    @cached_property
    def _name_re(self) -> Any:
        return linear_re.compile(self.nameregex) if self.nameregex is not None else None

    @cached_property
    def _arg_re(self) -> Any:
        return linear_re.compile(self.argregex) if self.argregex is not None else None

    def matches(self, info: ProcInfo) -> bool:
        comm = info.comm
        if comm is None:
            return False
        if self._name_re is not None:
            if not self._name_re.search(comm):
                return False
        elif self.name is not None and comm != self.name[: TASK_COMM_LEN - 1]:
            return False
        if info.netns != self.netns or (self.uid is not None and info.uid != self.uid):
            return False
        return self._arg_re is None or self._arg_re.search(info.cmdline) is not None

    def scan(self) -> set[int]:
        return {pid for pid in all_pids() if self.matches(ProcInfo(pid))}


def alive(pid: int, netns: tuple[int, int]) -> bool:
    """A running (not zombie) process in that network namespace."""
    stat = _read(f"/proc/{pid}/stat") or b""
    end = stat.rfind(b")")
    if end < 0 or stat[end + 2 : end + 3] in (b"Z", b"X", b""):
        return False
    return netns_of(pid) == netns
