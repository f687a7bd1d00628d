"""What differs by mode, behind one small interface.

The automaton's core (automaton.py) owns the job queue, the run loop, the states, the
scripts and the failover budget for every mode; its driver, chosen once from the
mode, does the rest: mirror_driver.py, farm_driver.py, light_driver.py.  The core
calls a driver for

- `reconcile`: the next transition, once no wait rule holds;
- `stop_application` and `restart`: stop, and start again, what the current state runs;
- `news`: the mode's fields of the heartbeat payload;
- `command`: prim, primforce, second and swap, and `update`: the mode's own commands;
- `stopped_for_wait` and `release`: what the mode forgets on going to WAIT, and
  releases when the module stops;
- `resume`: after a crash of the module process, take over what the one before ran;
- `check_fence`, `stream_lost`, `rfs_died`: the events of parts only some modes have,
  which the module process wires to the automaton.

The defaults here are those of a mode without such parts or commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hakit.errors import HakitError
from hakit.module.datastate import DataState
from hakit.module.news import News
from hakit.module.states import State, Status

if TYPE_CHECKING:
    from hakit.module.automaton import Automaton


class StartFailed(HakitError):
    """A start script failed: the module stops instead of running half started."""


class Driver:
    def __init__(self, a: Automaton) -> None:
        self.a = a
        self.p = a.p
        # The copy of the data, as the peers are told: only a mirror has one, kept on
        # disk; the other modes tell a new one's.
        self.data = DataState()

    async def reconcile(self) -> None:
        """One step towards what the mode wants, in a state other than STOP, no wait rule
        holding."""
        raise NotImplementedError

    async def stop_application(self, force: bool, replication: bool) -> None:
        """Stop what the current state started (scripts, checkers, VIP, and unless
        `replication` is false the replication: a restart in place keeps it)."""
        raise NotImplementedError

    async def restart(self) -> None:
        """Start again, in the state it runs in, what stop_application(replication=False)
        stopped; the core set the state Transient and stopped it."""
        raise NotImplementedError

    def news(self, news: News) -> News:
        """The heartbeat payload: the core's (state, status, the data state) completed by the mode."""
        return news

    def stopped_for_wait(self) -> None:
        """Going to WAIT, the application stopped: forget what the mode was about to do."""

    async def release(self) -> None:
        """The module stops, its application stopped: what it held for the whole run."""

    async def resume(self, state: State, status: Status) -> str | None:
        """A new module process in place of one that died in (state, status): take over
        what it ran, which kept running (None), or say why not: the crash cleanup then
        stops it, and the module starts afresh.  Only a mirror primary resumes."""
        return f"a {self.p.mode} module starts afresh"

    async def command(self, verb: str, fullsync: bool) -> None:
        """prim, primforce, second, swap: a mirror's; the other modes have no peer to
        hand the primary role to."""
        if verb == "swap":
            raise HakitError("swap applies to mirror modules")
        raise HakitError(f"{verb} applies to mirror modules; this one is {self.p.mode}")

    async def update(self, farm_config: Any) -> None:
        """`hakit update`: a farm's."""
        raise HakitError(f"update applies to farm modules with a <virtual_interface>; "
                         f"{self.a.name} has none")

    # -- events of parts only some modes have (the module process wires them)
    def check_fence(self) -> None:
        """A peer's news: a mirror primary holding writes may go on without its secondary."""

    def stream_lost(self) -> None:
        """A mirror primary's hakit-rfs lost the stream to the secondary by itself."""

    def rfs_died(self, role: str) -> None:
        """A mirror's hakit-rfs died."""
