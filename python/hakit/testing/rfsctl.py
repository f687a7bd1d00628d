"""A blocking client of hakit-rfs's control socket, for tests and benchmarks that run
the daemon by hand (the module process uses hakit.rfs.daemon)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from types import TracebackType


class RfsControl:
    """One control connection; the events it reads on the way are kept in `events`."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.events: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX)
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")

    def __call__(self, line: str) -> str:
        """Send one command; its reply line ("ok ..." or "error ...")."""
        self.file.write(line + "\n")
        self.file.flush()
        while True:
            reply = self.file.readline().strip()
            if not reply.startswith("event "):
                return reply
            self.events.append(reply)

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RfsControl:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def stats(self) -> dict[str, str]:
        reply = self("stats")
        if not reply.startswith("ok "):
            raise RuntimeError(f"stats: {reply}")
        return dict(kv.split("=", 1) for kv in reply.split()[1:])
