"""Shared by every test module: root-only tests, and simulated clusters that never outlive a test.

    def test_failover(make_sim):
        sim = make_sim(nodes=2, lans=2, daemon=True)   # started; removed when the test ends
        sim.kill("node1")

A cluster belongs to the pytest process that made it (owner_pid).  If that process dies
before its teardown (killed run, CI timeout), the next session's start removes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

from hakit.errors import HakitError
from hakit.testing.sim import Sim
from tests.leaks import fds_opened_since, open_fds, open_process_wide_fds
from tests.sim_support import IS_ROOT, session_leftovers, unique_sim_name

# Fixtures of more than one test module.
pytest_plugins = ("tests.rfs_local", "tests.rfs_pair")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and not IS_ROOT:
        pytest.skip("needs root (namespaces, mounts, bpf)")


def pytest_sessionstart(session: pytest.Session) -> None:
    if IS_ROOT:
        try:
            Sim.sweep_stale()
        except HakitError as exc:
            print(f"\nwarning: could not remove stale simulated clusters: {exc}", file=sys.stderr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Clusters a test made with Sim(...).up(owner_pid=os.getpid()) but did not remove.
    if IS_ROOT:
        try:
            Sim.down_all(owner_pid=os.getpid())
        except HakitError as exc:
            print(f"\nwarning: could not remove this session's simulated clusters: {exc}", file=sys.stderr)


@pytest.fixture(autouse=True, scope="session")
def process_wide_fds() -> None:
    open_process_wide_fds()


@pytest.fixture(autouse=True)
def no_leaked_fds(process_wide_fds: None) -> Iterator[None]:
    """Every descriptor a test opens is closed by its end (its fixtures' included: this
    one is set up before them and checks after them; wider-scoped fixtures are set up
    before it, so what they keep open across tests does not count)."""
    before = open_fds()
    yield
    leaked = fds_opened_since(before)
    if leaked:
        pytest.fail("file descriptors left open: " + ", ".join(leaked), pytrace=False)


@pytest.fixture(autouse=True, scope="session")
def no_leaked_clusters() -> Iterator[None]:
    """No namespace, link, mount (a node's bpffs lives in its mount namespace) or
    directory of a cluster this session named is left once its tests are done."""
    yield
    if IS_ROOT:
        leaked = session_leftovers()
        if leaked:
            pytest.fail("simulated clusters left on the host: " + ", ".join(leaked), pytrace=False)


@pytest.fixture
def sim_name() -> str:
    return unique_sim_name()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Sim]]:
    """Factory of started simulated clusters, every one removed when the test ends.

    make_sim(nodes=3, lans=1, daemon=False, paths=(), daemon_argv=None, sizes=None, shared=None) -> Sim
    """
    if not IS_ROOT:
        pytest.skip("needs root (namespaces, bridges, mounts)")
    made: list[Sim] = []

    def make(
        nodes: int = 3,
        lans: int = 1,
        daemon: bool = False,
        paths: Sequence[str] = (),
        daemon_argv: Sequence[str] | None = None,
        sizes: Mapping[str, str] | None = None,
        shared: Mapping[str, str] | None = None,
    ) -> Sim:
        sim = Sim(unique_sim_name())
        # Registered before up(): a cluster whose daemon failed is up, and must go too.
        made.append(sim)
        sim.up(nodes, lans=lans, daemon=daemon, paths=paths, owner_pid=os.getpid(), daemon_argv=daemon_argv,
               sizes=sizes, shared=shared)
        return sim

    yield make
    failures = []
    for sim in reversed(made):
        try:
            sim.down()
        except HakitError as exc:
            failures.append(str(exc))
    if failures:
        pytest.fail("removing simulated clusters: " + "; ".join(failures))


@pytest.fixture
def sim(make_sim: Callable[..., Sim]) -> Sim:
    """Three nodes on one LAN, no daemons."""
    return make_sim()
