"""Replication of a mirror module's <rfs> directories, as the automaton drives it.

One hakit-rfs per replicated directory.  The primary serves each directory through
FUSE and, once the secondary's receivers listen, attaches to them and runs a full
synchronisation (only differing blocks travel); the secondary becomes Ready when
the primary reports that synchronisation done for the receivers it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from hakit.config.module_model import Rfs
from hakit.errors import HakitError
from hakit.module.log import ModuleLog
from hakit.module.resources import Resources
from hakit.paths import Paths
from hakit.rfs.daemon import STOP_TIMEOUT_S, RfsDaemon, rfs_port
from hakit.store.module_store import Level


class Replication:
    def __init__(self, *, module: str, module_id: int, cfg: Rfs, paths: Paths, log: ModuleLog,
                 resources: Resources, local_addr: str, on_detached: Callable[[], None]) -> None:
        self.module = module
        self.module_id = module_id
        self.cfg = cfg
        self.paths = paths
        self.log = log
        self.resources = resources
        self.local_addr = local_addr
        self.on_detached = on_detached
        self.role: str | None = None
        self.daemons: list[RfsDaemon] = []
        self.epoch = 0  # identifies this node's receivers: the primary says which ones it synced

    def _argv(self, index: int, role: str) -> list[str]:
        argv = ["--xattr"] if self.cfg.acl else []
        if role == "primary":
            argv += ["--nbremconn", str(self.cfg.nbremconn),
                     "--sendtimeout", str(int(self.cfg.sendtimeout * 1000))]
        else:
            argv += ["--listen", f"{self.local_addr}:{rfs_port(self.module_id, index)}"]
        return argv

    def _event(self, index: int, text: str) -> None:
        if text.startswith("progress"):
            for kv in text.split()[1:]:
                key, _, value = kv.partition("=")
                if key.startswith("sync_"):
                    self.resources.set(f"rfs.{key}", value)
            return
        self.log(Level.EVENT, "rfs", f"Replication of {self.cfg.replicated[index].dir}: {text}")
        if text.startswith("detached"):
            self.resources.set("rfs.state", "detached")
            self.on_detached()

    async def start(self, role: str) -> None:
        """Serve every directory as primary (read-write, streaming) or secondary (receiving)."""
        if self.role == role:
            return
        await self.stop()
        run = self.paths.run / "rfs"
        for index, rep in enumerate(self.cfg.replicated):
            Path(rep.dir).mkdir(parents=True, exist_ok=True)
            daemon = RfsDaemon(
                rep.dir, run / f"{self.module}.{index}.ctl",
                self.paths.module_log(self.module) / f"rfs.{index}.log",
                self._argv(index, role), lambda text, i=index: self._event(i, text),
            )
            try:
                await daemon.start(role)
            except HakitError:
                await self.stop()
                raise
            self.daemons.append(daemon)
        self.role = role
        self.epoch = time.time_ns() if role == "secondary" else 0
        self.resources.set("rfs.state", role)
        self.log(Level.EVENT, "rfs", f"Replication started as {role}")

    async def sync(self, peer_addr: str) -> None:
        """Primary: attach to the secondary's receivers and make its copy identical."""
        began = time.monotonic()
        self.resources.set("rfs.state", "syncing")
        total_sent = 0
        for index, daemon in enumerate(self.daemons):
            await daemon.attach(peer_addr, rfs_port(self.module_id, index))
            stats = await daemon.fullsync()
            total_sent += int(stats.get("bytes_sent", 0))
        elapsed = time.monotonic() - began
        self.resources.set("rfs.state", "attached")
        self.resources.set("rfs.sync_bytes_sent", str(total_sent))
        self.resources.set("rfs.sync_elapsed_s", f"{elapsed:.1f}")
        self.log(Level.EVENT, "rfs", f"Secondary synchronised: {total_sent} bytes sent in {elapsed:.1f} s")

    async def stop_orphans(self) -> None:
        """Stop the hakit-rfs a crashed module process left serving its directories."""
        for index, rep in enumerate(self.cfg.replicated):
            ctl = self.paths.run / "rfs" / f"{self.module}.{index}.ctl"
            try:
                reader, writer = await asyncio.open_unix_connection(str(ctl))
            except OSError:
                continue  # nobody serves it
            writer.write(b"stop\n")
            await writer.drain()
            # It answers, unmounts and exits: the connection closes then.
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(reader.read(), STOP_TIMEOUT_S)
            writer.close()
            self.log(Level.EVENT, "rfs", f"Stopped the replication of {rep.dir} left by a crash")

    async def stop(self) -> None:
        for daemon in self.daemons:
            await daemon.stop()
        if self.daemons:
            self.log(Level.EVENT, "rfs", f"Replication stopped ({self.role})")
        self.daemons = []
        self.role = None
        self.resources.set("rfs.state", "stopped")
