"""Log lines about what a stranger can cause (forged heartbeats, failed handshakes): at
most `burst` per interval in all, whatever the sources, which are the stranger's to
choose; the first line of the next interval says how many were left out."""

from __future__ import annotations

import time


class Throttle:
    def __init__(self, interval: float, burst: int = 1) -> None:
        self.interval = interval
        self.burst = burst
        self.since = -interval  # monotonic start of the current interval
        self.passed = 0  # lines let through in it
        self.left_out = 0

    def __call__(self, message: str) -> str | None:
        """message to log now (with how many were left out before it), or None."""
        now = time.monotonic()
        if now - self.since >= self.interval:
            self.since, self.passed = now, 0
        if self.passed >= self.burst:
            self.left_out += 1
            return None
        self.passed += 1
        more = f" ({self.left_out} more left out before)" if self.left_out else ""
        self.left_out = 0
        return message + more
