"""Replication of a mirror module's <rfs> directories, as the automaton drives it.

One hakit-rfs per replicated directory.  The primary serves each directory through
FUSE and, once the secondary's receivers listen, attaches to them and synchronises
them: incrementally (only what its journal recorded while the secondary was away) when
the secondary's copy is of the lineage the journal records from, else fully (only
differing blocks travel).  The secondary becomes Ready when the primary reports that
synchronisation done for the receivers it started.

Lineage: a tag (the primary's data generation when it synchronised) naming a state both
copies shared.  DataState.base is the lineage this node's copy equals (0: none); the
primary's journal records from a lineage (`journal_tag` in stats).  The rules that keep
base true are in the automaton (docs/replication.md, "Reintegration").

Faults (docs/replication.md, "Secondary faults"): a stream the primary's hakit-rfs lost
by itself (the secondary failed an operation, stopped answering, went away) is reported
to on_detached; hakit-rfs then holds whatever would be acknowledged without the
secondary until fenced() says the secondary's copy is known to be outdated.  A
hakit-rfs that dies sets the resource rfs.daemon to down (the failover rule
rfs_failure then restarts the module in place, which calls revive()).  The primary's
is started with D's real directory as an inherited descriptor, opened before its first
mount, so that revive() puts a new one over the dead mount, which answers ENOTCONN
meanwhile: D is never bare.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hakit.config.module_model import Rfs
from hakit.errors import HakitError
from hakit.files import private_dir, write_atomic
from hakit.paths import Paths
from hakit.rfs.daemon import STOP_TIMEOUT_S, RfsCommandError, RfsDaemon, rfs_port
from hakit.rfs.progress import human_bytes
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.store.module_store import Level

POLL_S = 1.0  # stats are read this often while the replication runs (bandwidth resources)
RATE_MIN_BYTES = 1 << 20  # a sync that sent less measured latency, not a rate
DRAIN_S = 2.0


@dataclass(frozen=True)
class Security:
    """What protects the stream: the module key (authentication, both ways) and the node's
    certificate, its key and the cluster CA (TLS 1.3: encryption, and the nodes' identity)."""

    key: bytes
    tls: tuple[Path, Path, Path]  # cert, key, ca


def choose_mode(stats: Mapping[str, str], peer_base: int, full_asked: bool) -> tuple[str, str]:
    """Primary: ("incremental" | "full", why) for one directory, from its daemon's stats and
    what the secondary announces (the lineage its copy equals, whether it asks a full sync)."""
    if full_asked:
        return "full", "the secondary asked for a full synchronisation"
    if not peer_base:
        return "full", "the secondary's copy is of no known lineage"
    journal = stats.get("journal", "absent")
    if journal != "recording":
        return "full", f"no journal recording here (journal {journal})"
    tag = int(stats.get("journal_tag") or 0)
    if tag != peer_base:
        return "full", f"the journal records from lineage {tag}, the secondary's copy is lineage {peer_base}"
    paths, size = stats.get("dirty_paths", "?"), int(stats.get("dirty_bytes") or 0)
    return "incremental", f"lineage {tag}: {paths} paths, {human_bytes(size)} of data recorded"


def _int(stats: Mapping[str, str], key: str) -> int:
    try:
        return int(stats.get(key) or 0)
    except ValueError:
        return 0


class Replication:
    def __init__(self, *, module: str, module_id: int, cfg: Rfs, paths: Paths, log: ModuleLog,
                 resources: Resources, local_addr: str, security: Security,
                 on_detached: Callable[[], None], on_progress: Callable[[], None],
                 on_died: Callable[[str], None]) -> None:
        self.module = module
        self.module_id = module_id
        self.cfg = cfg
        self.paths = paths
        self.log = log
        self.resources = resources
        self.local_addr = local_addr
        self.security = security
        self.on_detached = on_detached
        self.on_progress = on_progress  # self.progress changed: the peer should hear it
        self.on_died = on_died  # (role) a hakit-rfs died: what must be said at once
        self.roots: dict[int, int] = {}  # primary: each directory's real directory, opened before any mount
        self.role: str | None = None
        self.daemons: list[RfsDaemon] = []
        self.epoch = 0  # identifies this node's receivers: the primary says which ones it synced
        self.progress: dict[str, str] = {}  # primary: the sync_* keys of the running (or last) sync
        self.rate = 0.0  # bytes/s the last synchronisation sent at (0: not measured)
        self._busy = asyncio.Lock()  # one sync or rfsdiff at a time: hakit-rfs runs one
        self._poller: asyncio.Task[None] | None = None

    @property
    def key_file(self) -> Path:
        return self.paths.run / "rfs" / f"{self.module}.key"

    def state_dir(self, index: int) -> Path:
        """Where the primary's journal of directory `index` lives."""
        return self.paths.module_var(self.module) / "rfs" / str(index)

    def _argv(self, index: int, role: str, adopt: int) -> list[str]:
        argv = ["--xattr"] if self.cfg.acl else []
        for ex in self.cfg.replicated[index].excluded:
            if ex.path is not None:
                argv += ["--exclude-path", ex.path]
            elif ex.regexpath is not None and ex.regexpath.startswith("!"):
                argv += ["--only", ex.regexpath[1:]]
            elif ex.regexpath is not None:
                argv += ["--exclude", ex.regexpath]
        cert, key, ca = self.security.tls
        argv += ["--auth-key-file", str(self.key_file),
                 "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)]
        if role == "primary":
            argv += ["--nbremconn", str(self.cfg.nbremconn),
                     "--sendtimeout", str(int(self.cfg.sendtimeout * 1000)),
                     "--nbrei", str(self.cfg.nbrei), "--rei-bw-percent", str(self.cfg.reidbwidthpercent),
                     "--rei-allowed-bw", str(self.cfg.reiallowedbw),
                     "--state", str(self.state_dir(index)), "--fence", "--keep-dead-mount",
                     "--root-fd", str(self.roots[index])]
            if self.cfg.write_policy == "applied":
                argv.append("--strict")
            if adopt:
                argv += ["--adopt", str(adopt)]
        else:
            argv += ["--listen", f"{self.local_addr}:{rfs_port(self.module_id, index)}"]
        return argv

    def _write_key(self) -> None:
        private_dir(self.key_file.parent)
        write_atomic(self.key_file, self.security.key.hex().encode() + b"\n", 0o600)

    def _event(self, index: int, text: str) -> None:
        if text.startswith("progress"):
            keys = dict(kv.split("=", 1) for kv in text.split()[1:] if "=" in kv)
            if keys.get("sync_mode") != "estimate":  # rfsdiff's dry run is no synchronisation
                self._publish(keys)
            return
        # A detach reported is one nobody asked for: the stream was lost.
        fault = text.startswith(("detached", "receiver failed"))
        self.log(Level.CRITICAL if fault else Level.EVENT, "rfs",
                 f"Replication of {self.cfg.replicated[index].dir}: {text}")
        if text.startswith("detached"):
            self.resources.set("rfs.state", "detached")
            self.on_detached()

    def _died(self, index: int, role: str, why: str) -> None:
        self.log(Level.CRITICAL, "rfs", f"Replication of {self.cfg.replicated[index].dir}: hakit-rfs {role} "
                 f"died ({why})")
        self.resources.set("rfs.state", "failed")
        self.on_died(role)
        self.resources.set("rfs.daemon", "down")

    @property
    def failed(self) -> bool:
        """One of the directories' hakit-rfs died."""
        return any(not daemon.alive for daemon in self.daemons)

    def _daemon(self, index: int, role: str, adopt: int) -> RfsDaemon:
        run = self.paths.run / "rfs"
        return RfsDaemon(
            self.cfg.replicated[index].dir, run / f"{self.module}.{index}.ctl",
            self.paths.module_log(self.module) / f"rfs.{index}.log",
            self._argv(index, role, adopt), lambda text: self._event(index, text),
            lambda why: self._died(index, role, why),
            pass_fds=(self.roots[index],) if role == "primary" else (),
        )

    async def _open_root(self, index: int) -> None:
        """The primary's hold on D's real directory, for as long as it is primary."""
        directory = self.cfg.replicated[index].dir
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise HakitError(f"replication of {directory}: {exc.strerror}") from None
            # Left by a run nobody is there to replace.  (umount off the loop: heartbeats.)
            await asyncio.to_thread(remove_dead_mounts, directory)
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.roots[index] = fd

    def _close_roots(self) -> None:
        for fd in self.roots.values():
            os.close(fd)
        self.roots = {}

    def _publish(self, keys: Mapping[str, str]) -> None:
        """A synchronisation's progress as rfs.sync_* resources, and for the peer."""
        progress = {k: v for k, v in keys.items() if k.startswith("sync_")}
        for key, value in progress.items():
            self.resources.set(f"rfs.{key}", value)
        if self.role == "primary" and progress != self.progress:
            self.progress = progress
            self.on_progress()

    def show_peer_progress(self, keys: Mapping[str, str]) -> None:
        """Secondary: the primary's progress in synchronising this node, as resources here."""
        for key, value in keys.items():
            if key.startswith("sync_"):
                self.resources.set(f"rfs.{key}", str(value))

    async def start(self, role: str, adopt: int = 0) -> None:
        """Serve every directory as primary (read-write, streaming) or secondary (receiving).
        adopt: the primary's copy equals this lineage (its journal records from it)."""
        if self.role == role:
            return
        await self.stop()
        self._write_key()
        for index, rep in enumerate(self.cfg.replicated):
            if role == "secondary":
                Path(rep.dir).mkdir(parents=True, exist_ok=True)
                # This copy is about to become the primary's: a journal of changes made to it
                # as a primary is meaningless now, and must not outlive it into a promotion.
                shutil.rmtree(self.state_dir(index), ignore_errors=True)
            try:
                if role == "primary":
                    with contextlib.suppress(OSError):  # there, or a dead mount (_open_root)
                        Path(rep.dir).mkdir(parents=True)
                    await self._open_root(index)
                daemon = self._daemon(index, role, adopt)
                await daemon.start(role)
            except HakitError:
                await self.stop()  # (closes the roots opened, this one's too)
                raise
            self.daemons.append(daemon)
        self.role = role
        self.epoch = time.time_ns() if role == "secondary" else 0
        self.progress = {}
        self._poller = asyncio.create_task(self._poll())
        self.resources.set("rfs.state", role)
        self.resources.set("rfs.daemon", "up")
        self.log(Level.EVENT, "rfs", f"Replication started as {role}"
                 + (f" (journal from lineage {adopt}: this copy is the secondary's)" if adopt else ""))

    async def adopt(self, role: str) -> str | None:
        """After a crash of the module process: take over the hakit-rfs it left serving
        every directory in `role` (they kept serving and replicating meanwhile).  None
        once adopted, else why not, with nothing adopted (the crash cleanup then stops
        what runs)."""
        for index in range(len(self.cfg.replicated)):
            self.roots[index] = -1  # (the daemon's own, read back by adopt())
            daemon = self._daemon(index, role, 0)
            why = await daemon.adopt(role)
            if why is not None:
                if daemon.root_fd >= 0:
                    os.close(daemon.root_fd)
                del self.roots[index]
                self.release()
                return f"replication of {daemon.directory}: {why}"
            if role == "primary":
                self.roots[index] = daemon.root_fd
            else:
                del self.roots[index]
            self.daemons.append(daemon)
        self.role = role
        self.epoch = 0
        self.progress = {}
        self._poller = asyncio.create_task(self._poll())
        self.resources.set("rfs.daemon", "up")
        self.log(Level.EVENT, "rfs", f"Replication adopted as {role}: hakit-rfs "
                 + ", ".join(str(d.proc.pid) for d in self.daemons if d.proc is not None)
                 + " left serving by the previous module process")
        return None

    def release(self) -> None:
        """Let the adopted hakit-rfs go on unwatched: this process gives up (the crash
        cleanup stops them)."""
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        for daemon in self.daemons:
            daemon.release()
        self.daemons = []
        self._close_roots()
        self.role = None

    async def stream_idle(self) -> float | None:
        """Secondary: seconds since every receiver last heard the primary (its stream
        carries keepalives when idle); None when one of them never did or cannot say."""
        idle = 0.0
        for daemon in self.daemons:
            try:
                ms = int((await daemon.stats()).get("rx_idle_ms", "-1"))
            except (HakitError, ValueError):
                return None
            if ms < 0:
                return None
            idle = max(idle, ms / 1000)
        return idle if self.daemons else None

    async def fenced(self) -> None:
        """The secondary's copy is known to be outdated (or cannot be told): writes held
        since the stream was lost go on without it."""
        for daemon in self.daemons:
            if daemon.alive:
                with contextlib.suppress(HakitError):
                    await daemon.fenced()

    async def revive(self) -> None:
        """Primary: a new hakit-rfs in place of each dead one, over its dead mount (the
        journal it left on disk goes on).  (The secondary starts all its receivers again.)"""
        for index, daemon in enumerate(self.daemons):
            if daemon.alive:
                continue
            await daemon.kill()  # reaps it and closes the control connection
            fresh = self._daemon(index, "primary", 0)
            await fresh.start("primary")
            self.daemons[index] = fresh
            self.log(Level.EVENT, "rfs", f"Replication of {fresh.directory}: hakit-rfs primary started "
                     "again over the dead mount")
        self.resources.set("rfs.state", "primary")
        self.resources.set("rfs.daemon", "up")

    async def sync(self, peer_addr: str, *, tag: int, peer_base: int, full_asked: bool) -> None:
        """Primary: attach to the secondary's receivers and make its copy identical; then the
        journals are clean with lineage `tag`, which the secondary records as its base."""
        async with self._busy:
            began, started = time.monotonic(), int(time.time())
            self.resources.set("rfs.state", "syncing")
            sent = files = 0
            modes: set[str] = set()
            try:
                for index, daemon in enumerate(self.daemons):
                    mode, why = choose_mode(await daemon.stats(), peer_base, full_asked)
                    self.log(Level.EVENT, "rfs", f"Replication of {daemon.directory}: {mode} "
                             f"synchronisation ({why})")
                    await daemon.attach(peer_addr, rfs_port(self.module_id, index))
                    mode, result = await self._sync_one(daemon, mode, tag)
                    modes.add(mode)
                    sent += _int(result, "bytes_sent")
                    files += _int(result, "files")
                    self._publish(await daemon.stats())  # its final state: done
            except (HakitError, asyncio.CancelledError):
                self.resources.set("rfs.sync_state", "failed")
                self.progress = {**self.progress, "sync_state": "failed"}
                self.on_progress()
                raise
        elapsed = time.monotonic() - began
        summary = modes.pop() if len(modes) == 1 else "mixed"
        if sent >= RATE_MIN_BYTES and elapsed > 0:
            self.rate = sent / elapsed
        for key, value in (("state", "attached"), ("sync_mode", summary), ("sync_bytes_sent", str(sent)),
                           ("sync_files", str(files)), ("sync_elapsed_s", f"{elapsed:.1f}"),
                           ("sync_started", str(started)), ("sync_state", "done")):
            self.resources.set(f"rfs.{key}", value)
        self.log(Level.EVENT, "rfs", f"Secondary synchronised ({summary}, lineage {tag}): "
                 f"{human_bytes(sent)} sent, {files} files in {elapsed:.1f} s")

    async def _sync_one(self, daemon: RfsDaemon, mode: str, tag: int) -> tuple[str, dict[str, str]]:
        if mode == "incremental":
            try:
                return mode, await daemon.run_to_end(f"resync tag={tag}")
            except RfsCommandError as exc:
                # The journal stopped recording since its stats were read (a failed journal write).
                if "no journal" not in exc.reason:
                    raise
                self.log(Level.EVENT, "rfs", f"{exc}: full synchronisation instead")
        return "full", await daemon.run_to_end(f"fullsync tag={tag}")

    async def in_sync_tag(self) -> int:
        """Primary, its application stopped: the lineage both copies equal (every directory
        attached, clean, nothing unacknowledged, one tag), else 0.  Writes still queued
        (the last 100 ms of buffered ones) get DRAIN_S to be acknowledged."""
        tags = set()
        deadline = time.monotonic() + DRAIN_S
        for daemon in self.daemons:
            while True:
                try:
                    stats = await daemon.stats()
                except HakitError:
                    return 0
                if (stats.get("journal"), stats.get("attached")) != ("clean", "1"):
                    return 0  # detached, or never synchronised
                if stats.get("queued_bytes") == "0":
                    break
                if time.monotonic() > deadline:
                    return 0
                await asyncio.sleep(0.05)
            tags.add(_int(stats, "journal_tag"))
        return tags.pop() if len(tags) == 1 else 0

    async def rfsdiff(self) -> list[dict[str, str]]:
        """Primary: per directory, what a synchronisation would send now: the journal's
        content while alone, a dry comparison with the attached secondary otherwise."""
        if self.role != "primary":
            raise HakitError("rfsdiff: the replication does not run as primary here")
        if self._busy.locked():
            raise HakitError(f"rfsdiff: a synchronisation is running ('hakit rfsprogress -m {self.module}' "
                             "follows it)")
        async with self._busy:
            return [{"dir": d.directory, **await d.run_to_end("rfsdiff")} for d in self.daemons]

    async def _poll(self) -> None:
        """Bandwidth resources (KB/s over the last second): rfs.netout_bandwidth,
        rfs.rep_bandwidth (live replication), rfs.rei_bandwidth (reintegration) on the
        primary, rfs.netin_bandwidth on the secondary; rfs.apply_failures, the operations
        the secondary failed to apply (as the primary heard of them, or as the receiver
        counted them), since the replication started."""
        before: dict[int, dict[str, str]] = {}
        last = time.monotonic()
        while True:
            await asyncio.sleep(POLL_S)
            now = time.monotonic()
            elapsed, last = now - last, now
            moved = {"netout": 0, "netin": 0, "rep": 0, "rei": 0}
            failures = 0
            for index, daemon in enumerate(self.daemons):
                try:
                    stats = await daemon.stats()
                except HakitError:
                    continue
                failures += _int(stats, "apply_failures") + _int(stats, "rx_failures")
                prev = before.get(index)
                before[index] = stats
                if prev is None:
                    continue

                def delta(key: str, prev: dict[str, str] = prev, stats: dict[str, str] = stats) -> int:
                    now_, then = _int(stats, key), _int(prev, key)
                    return now_ - then if now_ >= then else now_  # a counter reset: a new sync run

                sync = delta("sync_bytes_sent")
                moved["netout"] += delta("bytes_on_wire")
                moved["netin"] += delta("rx_bytes")
                moved["rei"] += sync
                moved["rep"] += max(0, delta("bytes_sent") - sync)
            names = ("netout", "rep", "rei") if self.role == "primary" else ("netin",)
            for name in names:
                self.resources.set(f"rfs.{name}_bandwidth", str(round(moved[name] / 1024 / elapsed)))
            self.resources.set("rfs.apply_failures", str(failures))

    async def stop_orphans(self) -> None:
        """Stop the hakit-rfs a crashed module process left serving its directories, and
        remove the dead mounts of those that died with it (a primary's keeps its mount
        dead: nobody else would)."""
        for index, rep in enumerate(self.cfg.replicated):
            ctl = self.paths.run / "rfs" / f"{self.module}.{index}.ctl"
            try:
                reader, writer = await asyncio.open_unix_connection(str(ctl))
            except OSError:
                await asyncio.to_thread(remove_dead_mounts, rep.dir)
                continue  # nobody serves it
            writer.write(b"stop\n")
            await writer.drain()
            # It answers, unmounts and exits: the connection closes then.
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(reader.read(), STOP_TIMEOUT_S)
            writer.close()
            self.log(Level.EVENT, "rfs", f"Stopped the replication of {rep.dir} left by a crash")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for daemon in self.daemons:
            await daemon.stop()
        if self.roots:
            # A hakit-rfs that died left its mount dead beneath (or instead of) the last one.
            for rep in self.cfg.replicated:
                await asyncio.to_thread(remove_dead_mounts, rep.dir)
        self._close_roots()
        if self.daemons:
            self.log(Level.EVENT, "rfs", f"Replication stopped ({self.role})")
        self.daemons = []
        self.role = None
        self.key_file.unlink(missing_ok=True)
        self.resources.set("rfs.state", "stopped")
        self.resources.set("rfs.daemon", "stopped")


def remove_dead_mounts(directory: str) -> None:
    """Unmount the dead hakit-rfs mounts on top of directory (each answers ENOTCONN), so
    that it is the directory again; a live mount stops it."""
    for _ in range(16):
        try:
            os.statvfs(directory)  # not stat: FUSE answers that from its cache, dead or alive
            return
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                return
        if subprocess.run(["umount", "-l", directory], capture_output=True).returncode != 0:
            return
