"""The farm's driver: every node UP at once, each serving its share of the clients
through the shared virtual IPs (hakit.vip.farm, which owns the ownership protocol the
heartbeats carry).  Behaviour: docs/farm.md.

A farm node needs nobody's agreement to run: out of WAIT it sets up the filter and the
VIPs, opens its share and starts the application (start_both); it stays UP, NotReady
while its filter is missing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hakit.errors import HakitError
from hakit.module.driver import Driver, StartFailed
from hakit.module.news import News
from hakit.module.states import State, Status


class FarmDriver(Driver):
    async def reconcile(self) -> None:
        a = self.a
        if a.state == State.WAIT:
            await self.start_farm()
        elif a.state == State.UP and a.status != Status.TRANSIENT:
            a.set_state(State.UP, self._up_status())

    def news(self, news: News) -> News:
        farm = self.p.farm
        return dataclasses.replace(news, lb=farm.payload()) if farm else news

    async def start_farm(self) -> None:
        a = self.a
        a.set_state(State.WAIT, Status.TRANSIENT)
        farm = self.p.farm
        if farm is not None:
            try:
                await farm.setup(self.p.heart.timeout if self.p.heart else 0.0)
            except HakitError as exc:
                raise StartFailed(str(exc)) from None
        self._open_share()
        await a.start_role("both")
        a.set_state(State.UP, self._up_status())

    def _up_status(self) -> Status:
        """A farm node whose filter is missing is no member (docs/farm.md, "The filter is
        supervised"): it stays UP, NotReady, until the filter is back."""
        farm = self.p.farm
        return Status.NOT_READY if farm is not None and farm.missing else Status.READY

    def _open_share(self) -> None:
        """Without scriptcontrol the module opens the share before start_both (the seeds' order)."""
        if self.p.farm is not None and not self.p.farm.config.scriptcontrol:
            self.p.farm.open()

    async def update(self, farm_config: Any) -> None:
        """`hakit update`: the farm's virtual IPs and load balancing follow the installed
        configuration; with scriptcontrol the share stays closed until the update script
        (called with the state before and after) opens it, as the seeds' product does."""
        a = self.a
        farm = self.p.farm
        if farm is None:
            await super().update(farm_config)
            return
        if a.state not in (State.UP, State.WAIT):
            raise HakitError(f"update: module {a.name} is {a.state}; it applies in UP or WAIT")
        before = str(a.state)
        await farm.reload(farm_config)
        if farm.config.scriptcontrol:
            farm.close()
        await a.script("update", before, str(a.state), fatal=False)

    async def stop_application(self, force: bool, replication: bool) -> None:
        a = self.a
        if a.state != State.UP:
            return
        await self.p.checks.disable("both")
        farm = self.p.farm
        if farm is not None and not farm.config.scriptcontrol:
            # Before the application stops, not after: new clients go to the other
            # nodes at once while this node's established ones finish.
            farm.close()
        await a.stop_script("stop_both", force)
        if farm is not None:
            farm.close()  # scriptcontrol: whatever the scripts did, a stopped node takes nobody

    async def restart(self) -> None:
        self._open_share()
        await self.a.start_role("both")
        self.a.set_state(State.UP, self._up_status())

    async def release(self) -> None:
        if self.p.farm is not None:
            await self.p.farm.release()
