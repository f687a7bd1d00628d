"""Which processes errd and `hakit kill` count (check/procs.py), against what any local
user can do: name a process alike, give it a huge command line."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hakit.check.procs import ProcMatcher, own_netns, uid_of
from hakit.config.kinds import ProcRegex
from hakit.errors import HakitError

NOBODY = 65534


@contextmanager
def sleeping(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(list(argv))
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_an_argregex_takes_linear_time_on_a_users_command_line() -> None:
    """(a|aa)*c backtracks exponentially on a run of a's in a backtracking engine: a
    local user's 20 KB command line would stall the module process (and its heartbeats)."""
    code = ("from hakit.check.procs import ProcMatcher, own_netns\n"
            "print(len(ProcMatcher('sh', None, '^sh -c sleep 60 (a|aa)*c$', own_netns()).scan()))\n")
    with sleeping("sh", "-c", "sleep 60", "a" * 20000):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert run.returncode == 0 and run.stdout.strip() == "0", run.stderr


@pytest.mark.root
def test_the_owner_filter_counts_only_that_users_processes() -> None:
    marker = "31.4159"
    with sleeping("sleep", marker) as mine, sleeping("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                                     "--clear-groups", "sleep", marker) as theirs:
        def found(uid: int | None) -> set[int]:
            return ProcMatcher("sleep", None, f"^sleep {marker}$", own_netns(), uid).scan()

        deadline = time.monotonic() + 5  # setpriv has exec'd sleep
        while len(found(None)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert found(None) == {mine.pid, theirs.pid}
        assert found(0) == {mine.pid}
        assert found(NOBODY) == {theirs.pid}


def test_users_resolve_by_name_or_number() -> None:
    assert uid_of("root") == 0 and uid_of("65534") == NOBODY
    with pytest.raises(HakitError, match="no such user"):
        uid_of("no-such-user-here")


@pytest.mark.parametrize("bad", [r"(a)\1", "(?=a)b", "(?<=a)b", "("])
def test_a_backtracking_only_regex_is_refused_clearly(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid regular expression"):
        ProcRegex().parse(bad)
