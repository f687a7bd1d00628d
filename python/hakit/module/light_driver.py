"""The light module's driver: one node, no peer, no replication.  Out of WAIT it becomes
primary (ALONE) at once: its VIP if it has one, start_prim, the checkers of class prim.
"""

from __future__ import annotations

from hakit.module.driver import Driver
from hakit.module.states import PRIMARY, State, Status


class LightDriver(Driver):
    async def reconcile(self) -> None:
        if self.a.state == State.WAIT:
            self.a.set_state(State.WAIT, Status.TRANSIENT)
            await self.a.start_primary()

    async def stop_application(self, force: bool, replication: bool) -> None:
        if self.a.state in PRIMARY:
            await self.a.stop_primary(force)

    async def restart(self) -> None:
        await self.a.restart_primary()
