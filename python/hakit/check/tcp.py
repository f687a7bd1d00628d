"""tcp checker: a TCP connection to <to addr port> succeeds within timeout, every interval."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hakit.check.base import CheckContext, PeriodicChecker
from hakit.config.module_model import TcpChecker


class TcpCheck(PeriodicChecker):
    kind, rule_prefix = TcpChecker.RESOURCE, TcpChecker.RULE_PREFIX

    def __init__(self, ctx: CheckContext, cfg: TcpChecker, when: str) -> None:
        super().__init__(ctx)
        assert cfg.to.port is not None  # the model requires it
        self.ident, self.when, self.action = cfg.ident, when, cfg.action
        self.addr, self.port = cfg.to.addr, cfg.to.port
        self.interval, self.timeout = cfg.to.interval, cfg.to.timeout

    async def probe(self) -> bool:
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.addr, self.port), self.timeout
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "addr": self.addr, "port": self.port,
                "interval": self.interval, "timeout": self.timeout}
