"""Driving one `hakit-rfs` process: the replicated file system of one directory of a
mirror module (native/rfs/).

On the primary it serves the directory through FUSE and streams every change to the
secondary's receiver; on the secondary it receives, and the directory is read-only
to applications.  The module process talks to it over a Unix control socket: one
text command per line, one reply line starting with "ok" or "error"; lines starting
with "event" are the daemon's news (a detached secondary).  Its death is noticed at
once (the process is awaited) and reported to on_died.

A hakit-rfs outlives the module process that started it: a respawned module process
adopts it (adopt()), finding it by its control socket (the peer's pid, SO_PEERCRED)
and watching it through a pidfd, since it is no child of its own any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from hakit.errors import HakitError
from hakit.files import open_private_append

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 30.0
RFS_PORT_BASE = 10000  # + 16 * module id + directory index: each directory its own receiver


def rfs_binary() -> Path:
    return Path(str(resources.files("hakit") / "libexec" / "hakit-rfs"))


def rfs_port(module_id: int, index: int) -> int:
    return RFS_PORT_BASE + 16 * module_id + index


def parse_keys(text: str) -> dict[str, str]:
    """The key=value words of a reply; other words (a trailing remark) are left out."""
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


class RfsCommandError(HakitError):
    """hakit-rfs refused a command; `reason` is its own message ("resync: no journal: ...")."""

    def __init__(self, directory: str, reason: str) -> None:
        super().__init__(f"replication of {directory}: {reason}")
        self.reason = reason


def exit_reason(code: int) -> str:
    if code == UNKNOWN_EXIT:
        return "ended; started by an earlier module process, its exit status is not known here"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


class Adopted:
    """A hakit-rfs an earlier module process started, watched through a pidfd: the parts
    of asyncio.subprocess.Process that RfsDaemon uses.  Its exit status is its parent's
    to read, not ours: returncode is None while it runs, then UNKNOWN_EXIT."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        self.returncode: int | None = None
        self._ended = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(self._pidfd, self._exited)

    def _exited(self) -> None:
        self.close()
        self.returncode = UNKNOWN_EXIT
        if not self._ended.done():
            self._ended.set_result(UNKNOWN_EXIT)

    def close(self) -> None:
        """Stop watching it."""
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    async def wait(self) -> int:
        return await asyncio.shield(self._ended)

    def kill(self) -> None:
        if self.returncode is None and self._pidfd >= 0:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)


UNKNOWN_EXIT = 1 << 16  # beyond any exit status: "ended", how is its parent's to know


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process listening at the other end of a Unix socket."""
    pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return int(pid)


class RfsDaemon:
    def __init__(self, directory: str, ctl: Path, log: Path, argv_tail: list[str],
                 on_event: Callable[[str], None], on_died: Callable[[str], None] | None = None,
                 pass_fds: Sequence[int] = ()) -> None:
        self.directory = directory
        self.ctl = ctl
        self.log = log
        self.argv_tail = argv_tail
        self.on_event = on_event
        self.on_died = on_died  # why: it ended without being asked to
        self.pass_fds = tuple(pass_fds)
        self.stopping = False
        self._watch: asyncio.Task[None] | None = None
        self.proc: asyncio.subprocess.Process | Adopted | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._replies: asyncio.Queue[str] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None
        self.adopted = False  # started by an earlier module process (adopt())
        self.root_fd = -1  # adopted primary: D's real directory, from the process that holds it

    async def start(self, role: str) -> None:
        self.ctl.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.ctl.unlink()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open_private_append(self.log) as out:
            self.proc = await asyncio.create_subprocess_exec(
                str(rfs_binary()), role, "--dir", self.directory, "--ctl", str(self.ctl), *self.argv_tail,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=self.pass_fds,
            )
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while True:
            if self.proc.returncode is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:]
                raise HakitError(f"replication of {self.directory} did not start: "
                                 f"{tail[0] if tail else 'exited'} (log: {self.log})")
            with contextlib.suppress(OSError):
                self._reader, self._writer = await asyncio.open_unix_connection(str(self.ctl))
                break
            if asyncio.get_running_loop().time() > deadline:
                await self.kill()
                raise HakitError(f"replication of {self.directory}: no control socket after "
                                 f"{START_TIMEOUT_S:g} s")
            await asyncio.sleep(0.02)
        self._listen(self.proc)

    def _listen(self, proc: asyncio.subprocess.Process | Adopted) -> None:
        self._pump = asyncio.create_task(self._read_lines())
        self._watch = asyncio.create_task(self._watch_exit(proc))

    async def adopt(self, role: str) -> str | None:
        """Take over the hakit-rfs serving this directory in `role` that an earlier module
        process started: None once adopted, else why not (nobody serves the control
        socket, or it runs otherwise than this daemon would be started).  Its command
        line must be the one start() would give but for the inherited descriptor's number
        and the lineage it adopted at start; the descriptor itself (D's real directory,
        opened before the first mount) is given back as root_fd."""
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(str(self.ctl))
        except OSError:
            return "no hakit-rfs serves it"
        why = self._adopt(role, self._writer.get_extra_info("socket"))
        if why is not None:
            self._close()
            return why
        self.adopted = True
        assert self.proc is not None
        self._listen(self.proc)
        try:
            await self.command("stats")  # it is the process watched: it answers
        except HakitError as exc:
            await self.kill()
            return str(exc)
        return None

    def _adopt(self, role: str, sock: socket.socket) -> str | None:
        try:
            pid = peer_pid(sock)
            words = [w.decode(errors="replace") for w in
                     Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
        except OSError as exc:
            return f"its process cannot be read: {exc.strerror}"
        want = [str(rfs_binary()), role, "--dir", self.directory, "--ctl", str(self.ctl), *self.argv_tail]
        if _comparable(words) != _comparable(want):
            return f"it runs as '{' '.join(words[1:3])} ...' with other options"
        if role == "primary":
            try:
                fd = int(words[words.index("--root-fd") + 1])
                self.root_fd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except (ValueError, IndexError, OSError) as exc:
                return f"its hold on the real directory cannot be taken: {exc}"
        try:
            self.proc = Adopted(pid)
        except OSError as exc:
            return f"its process cannot be watched: {exc.strerror}"
        return None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def _watch_exit(self, proc: asyncio.subprocess.Process | Adopted) -> None:
        code = await proc.wait()
        if not self.stopping and self.on_died is not None:
            self.on_died(exit_reason(code))

    async def _read_lines(self) -> None:
        assert self._reader is not None
        while line := await self._reader.readline():
            text = line.decode(errors="replace").strip()
            if text.startswith("event "):
                self.on_event(text[len("event "):])
            else:
                await self._replies.put(text)
        await self._replies.put("error control socket closed")

    async def command(self, line: str, timeout: float = 30.0) -> str:
        """Send one command; the reply's text after "ok", or HakitError."""
        if self._writer is None or not self.alive:
            raise HakitError(f"replication of {self.directory} is not running")
        async with self._lock:
            try:
                self._writer.write(line.encode() + b"\n")
                await self._writer.drain()
            except (OSError, RuntimeError) as exc:  # it died meanwhile: the socket is closed
                raise HakitError(f"replication of {self.directory}: control socket: {exc}") from None
            try:
                reply = await asyncio.wait_for(self._replies.get(), timeout)
            except TimeoutError:
                raise HakitError(f"replication of {self.directory}: no answer to '{line}'") from None
        if reply == "ok" or reply.startswith("ok "):
            return reply[3:]
        raise RfsCommandError(self.directory, reply.removeprefix("error "))

    async def run_to_end(self, line: str) -> dict[str, str]:
        """A command that answers only when its work is over (fullsync, resync, rfsdiff), on a
        connection of its own: the main one must stay free for detach and stats meanwhile."""
        reader, writer = await asyncio.open_unix_connection(str(self.ctl))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            while raw := await reader.readline():
                text = raw.decode(errors="replace").strip()
                if text.startswith("event "):
                    continue  # the main connection hears the same events
                if text == "ok" or text.startswith("ok "):
                    return parse_keys(text[3:])
                raise RfsCommandError(self.directory, text.removeprefix("error "))
            raise HakitError(f"replication of {self.directory}: control socket closed during '{line}'")
        finally:
            writer.close()

    async def attach(self, host: str, port: int) -> None:
        await self.command(f"attach {host} {port}")

    async def detach(self) -> None:
        await self.command("detach")

    async def fenced(self) -> None:
        """The secondary's copy is known to be outdated: what waits on it may go on."""
        await self.command("fenced")

    async def stats(self) -> dict[str, str]:
        return parse_keys(await self.command("stats"))

    async def stop(self) -> None:
        """Unmount and end; killed if it does not end in time."""
        if self.proc is None:
            return
        self.stopping = True
        with contextlib.suppress(HakitError, OSError):
            await self.command("stop", timeout=STOP_TIMEOUT_S)
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            await self.kill()
        self._close()

    async def kill(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            # hakit-rfs's watchdog child unmounts what a killed server leaves behind.
            await self.proc.wait()
        self._close()

    def release(self) -> None:
        """Let an adopted hakit-rfs go on unwatched (the crash cleanup stops it)."""
        if isinstance(self.proc, Adopted):
            self.proc.close()
        self.stopping = True
        self._close()

    def _close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _comparable(argv: list[str]) -> list[str]:
    """A command line without what may differ between the start and an adoption: the
    number of the inherited descriptor and the lineage adopted at start."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in ("--root-fd", "--adopt"):
            skip = True
        else:
            out.append(word)
    return out
