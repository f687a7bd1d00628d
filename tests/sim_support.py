"""Simulated clusters in tests: whether they can run here (IS_ROOT), a cluster name no
concurrent session uses (unique_sim_name), and what clusters left on the host
(leftovers, session_leftovers), spelled out from the harness's naming contract
(hakit.testing.sim's docstring)."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from pathlib import Path

from hakit.testing import sim_host
from hakit.testing.sim import DATA_ROOT, NAME_RE, STATE_ROOT

IS_ROOT = os.geteuid() == 0
_serial = itertools.count()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = digits[d] + out
        if not n:
            return out


# This process's part of every name: what it made, and only that, is its to account for
# (another engineer's clusters may be up on the same host meanwhile).
SESSION_PREFIX = f"t{_base36(os.getpid())[-4:]:0>4}"


def unique_sim_name() -> str:
    """A cluster name no other test of any concurrent session uses (pid + serial, 7 chars)."""
    return f"{SESSION_PREFIX}{_base36(next(_serial) % 36**2):0>2}"


def _traces(wanted: Callable[[str], bool]) -> list[str]:
    name = NAME_RE.pattern
    found: list[str] = []
    named = [
        ("netns", rf"hksim-({name})-node\d+", sim_host.netns_names()),
        ("link", rf"hk[bv]({name})-\d+(?:-\d+)?", sim_host.links()),
        ("nft", rf"hakit_sim_({name})", sim_host.nft_bridge_tables()),
        ("cgroup", rf"hakit-sim-({name})", [d.name for d in sim_host.cgroup2_root().iterdir()]),
    ]
    for kind, pattern, candidates in named:
        for candidate in candidates:
            m = re.fullmatch(pattern, candidate)
            if m and wanted(m.group(1)):
                found.append(f"{kind} {candidate}")
    # A node's bpffs, its mounts and processes live in its mount namespace, which lasts
    # while its pin under STATE_ROOT is mounted: a leaked pin is a leaked node.
    for root in (STATE_ROOT, DATA_ROOT):
        for target in sim_host.mounts_under([root]):
            parts = Path(target).relative_to(root).parts
            if parts and wanted(parts[0]):
                found.append(f"mount {target}")
        if root.is_dir():
            found += [f"dir {d}" for d in sorted(root.iterdir()) if wanted(d.name)]
    return found


def leftovers(name: str) -> list[str]:
    """Everything of cluster `name` still on the host."""
    return _traces(lambda n: n == name)


def session_leftovers() -> list[str]:
    """Everything of the clusters this process named still on the host."""
    return _traces(lambda n: n.startswith(SESSION_PREFIX))
