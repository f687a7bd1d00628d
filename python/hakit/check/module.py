"""module checker: another module is up (Ready in ALONE, PRIM, SECOND or UP), on this node
or, with <to>, on another node; asked every POLL_S through the module process."""

from __future__ import annotations

from typing import Any

from hakit.check.base import CheckContext, PeriodicChecker
from hakit.config.module_model import ModuleChecker, ModuleTo

POLL_S = 1.0
UP_STATES = frozenset({"ALONE", "PRIM", "SECOND", "UP"})
READY = "Ready"


class ModuleCheck(PeriodicChecker):
    kind, rule_prefix = ModuleChecker.RESOURCE, ModuleChecker.RULE_PREFIX
    interval = POLL_S

    def __init__(self, ctx: CheckContext, cfg: ModuleChecker, when: str) -> None:
        super().__init__(ctx)
        self.ident, self.when, self.action = cfg.ident or cfg.name, when, cfg.action
        self.name = cfg.name
        # Without <to>, the module on this node: no address, and the port is unused.
        self.addr = cfg.to.addr if cfg.to is not None else None
        self.port = (cfg.to or ModuleTo()).port

    async def probe(self) -> bool:
        answer = await self.ctx.module_state(self.name, self.addr, self.port)
        return answer is not None and answer[0] in UP_STATES and answer[1] == READY

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "module": self.name, "addr": self.addr, "port": self.port}
