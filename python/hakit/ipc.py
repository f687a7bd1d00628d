"""Request/response over a local Unix socket, msgpack frames (hakit._wire).

Used between the CLI and hakitd, and between hakitd and its module processes.
A request is {"op": name, "args": {...}, "user": who}; the answer is
{"ok": True, "result": ...} or {"ok": False, "error": message}.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hakit._wire import FrameDecoder, FrameError, pack_frame
from hakit.errors import DaemonNotRunning, HakitError

Handler = Callable[[str, dict[str, Any], str], Awaitable[Any]]


class RemoteError(HakitError):
    """The daemon understood the request and refused or failed it."""


USER_ENV = "HAKIT_USER"  # set by hakitd for the commands it runs for a web or remote user
ORIGIN_ENV = "HAKIT_ORIGIN"


def caller() -> str:
    return os.environ.get(USER_ENV) or os.environ.get("SUDO_USER") or getpass.getuser()


# ---------------------------------------------------------------- client (blocking)


def call(path: Path, op: str, args: dict[str, Any] | None = None, timeout: float = 30.0,
         what: str = "hakitd") -> Any:
    """One request, blocking; raises DaemonNotRunning when nobody listens at `path`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(
                f"{what} is not running on this node (no answer on {path}); start it with 'hakitd'"
            ) from None
        sock.sendall(request_frame(op, args))
        decoder = FrameDecoder()
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise HakitError(f"{what} did not answer '{op}' within {timeout:g} s") from None
            if frames := decode_frames(decoder, data, what, op):
                return reply_result(frames[0], what, op)
    finally:
        sock.close()


def request_frame(op: str, args: dict[str, Any] | None) -> bytes:
    return pack_frame({"op": op, "args": args or {}, "user": caller()})


def decode_frames(decoder: FrameDecoder, data: bytes, what: str, op: str) -> list[Any]:
    if not data:
        raise HakitError(f"{what} closed the connection without answering '{op}'")
    return list(decoder.feed(data))


def reply_result(reply: object, what: str, op: str) -> Any:
    if not isinstance(reply, dict) or "ok" not in reply:
        raise HakitError(f"{what} sent an unexpected answer to '{op}'")
    if not reply["ok"]:
        raise RemoteError(str(reply.get("error", "failed")))
    return reply.get("result")


def answering(path: Path) -> bool:
    """Whether a live process serves `path` (a leftover socket file does not count)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------- server (asyncio)


async def serve(path: Path, handler: Handler) -> asyncio.AbstractServer:
    """Listen on `path` (root only: mode 0600); each request is handled by `handler`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                for req in decoder.feed(data):
                    writer.write(pack_frame(await dispatch(handler, req)))
                    await writer.drain()
        except FrameError as exc:
            # Garbage on the socket: answer once so the sender knows why, then drop it.
            writer.write(pack_frame({"ok": False, "error": str(exc)}))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(on_client, path=str(path))
    finally:
        os.umask(old_umask)
    return server


async def dispatch(handler: Handler, req: object) -> dict[str, Any]:
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        return {"ok": False, "error": "malformed request"}
    args = req.get("args") or {}
    if not isinstance(args, dict):
        return {"ok": False, "error": "malformed request arguments"}
    try:
        return {"ok": True, "result": await handler(req["op"], args, str(req.get("user", "?")))}
    except HakitError as exc:
        return {"ok": False, "error": str(exc)}


async def acall(path: Path, op: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """One request from inside an event loop (hakitd to a module process)."""
    what = str(path)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(what), timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonNotRunning(f"nothing answers on {path}") from None
    try:
        writer.write(request_frame(op, args))
        await writer.drain()
        decoder = FrameDecoder()
        while True:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if frames := decode_frames(decoder, data, what, op):
                return reply_result(frames[0], what, op)
    finally:
        writer.close()
