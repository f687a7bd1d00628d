"""Calling another node's hakitd: TLS 1.3 with this node's certificate, the server's checked
against the cluster CA, the retired list and the node meant; the request and answer frames
of hakit.ipc.  The server side, and the protocol's description: node/rpc.py."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from hakit import ipc
from hakit._wire import FrameDecoder, FrameError
from hakit.errors import HakitError
from hakit.paths import Paths
from hakit.runtime import credentials

RPC_PORT = 9010
ALPN = "hakit/1"
CONNECT_TIMEOUT = 3.0  # per address: one lost SYN is retransmitted after 1 s
HANDSHAKE_TIMEOUT = 5.0


class RpcError(HakitError):
    """The conversation with another node failed (as opposed to the node refusing the request)."""


class Unreachable(RpcError):
    pass


def client_context(p: Paths) -> ssl.SSLContext:
    """This node's credentials, for connections to other nodes (one context serves many)."""
    return tls_context(p, server=False)


def tls_context(p: Paths, server: bool) -> ssl.SSLContext:
    ca, cert, key = credentials.credential_files(p)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise credentials.PkiError(f"cannot load the credentials in {p.pki}: {exc}") from None
    ctx.set_alpn_protocols([ALPN])
    return ctx


def peer_name(ssl_object: ssl.SSLObject | None) -> str:
    cert = ssl_object.getpeercert() if ssl_object else None
    subject = cast("tuple[tuple[tuple[str, str], ...], ...]", (cert or {}).get("subject", ()))
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return "?"


def reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return (exc.reason or "").replace("_", " ").lower() or str(exc)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)


@dataclass
class Connection:
    """An authenticated connection to one node; several requests may follow each other."""

    addr: str
    peer: str  # the CN of the node's certificate
    peer_cert_der: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def call(self, op: str, args: dict[str, Any] | None = None, timeout: float = 10.0,
                   user: str | None = None) -> Any:
        what = f"{self.peer} ({self.addr})"
        try:
            request = ipc.request_frame(op, args, user)
        except FrameError as exc:
            raise RpcError(f"cannot send '{op}' to {what}: {exc}") from None
        try:
            self.writer.write(request)
            await self.writer.drain()
            decoder = FrameDecoder()
            async with asyncio.timeout(timeout):
                while True:
                    data = await self.reader.read(65536)
                    if frames := ipc.decode_frames(decoder, data, what, op):
                        return ipc.reply_result(frames[0], what, op)
        except TimeoutError:
            raise RpcError(f"{what} did not answer '{op}' within {timeout:g} s") from None
        except (ssl.SSLError, ConnectionError) as exc:
            # TLS 1.3: a server refusing our certificate says so only on the first read.
            raise RpcError(f"{what} dropped the connection: {reason(exc)}") from None
        except FrameError as exc:
            raise RpcError(f"{what} sent garbage: {exc}") from None

    def close(self) -> None:
        self.writer.close()


async def connect(p: Paths, addrs: Sequence[str], port: int = RPC_PORT,
                  context: ssl.SSLContext | None = None, node: str | None = None) -> Connection:
    """A connection to the first of `addrs` that answers (a node's addresses in LAN order),
    which must be `node` when given."""
    ctx = context or client_context(p)
    failures = []
    for addr in addrs:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), CONNECT_TIMEOUT)
        except TimeoutError:
            failures.append(f"{addr}:{port}: no answer within {CONNECT_TIMEOUT:g} s")
            continue
        except OSError as exc:
            failures.append(f"{addr}:{port}: {reason(exc)}")
            continue
        try:
            await asyncio.wait_for(writer.start_tls(ctx), HANDSHAKE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            writer.close()
            # It answered: another address would reach the same node and fail the same way.
            raise RpcError(f"{addr}:{port}: TLS handshake failed: {reason(exc)}") from None
        ssl_object = writer.get_extra_info("ssl_object")
        try:
            peer, der = peer_name(ssl_object), ssl_object.getpeercert(binary_form=True) or b""
        except ValueError:
            # The node ended TLS as soon as it began: it refused our certificate or protocol.
            writer.close()
            raise RpcError(f"{addr}:{port}: the node closed the connection at once "
                           f"(does it trust this node's certificate? does it speak {ALPN}?)") from None
        refusal = None
        if credentials.cert_id(der) in credentials.retired(p):
            refusal = f"its certificate ({peer}) is retired"
        elif node is not None and peer != node:
            refusal = f"it is {peer}, not {node} (is {addr} {node}'s address in cluster.xml?)"
        if refusal:
            writer.close()
            raise RpcError(f"{addr}:{port}: refused: {refusal}")
        return Connection(addr, peer, der, reader, writer)
    raise Unreachable("; ".join(failures) or "no address")


async def acall_node(paths: Paths, addr: str, op: str, args: dict[str, Any],
                     port: int = RPC_PORT, timeout: float = 10.0) -> Any:
    conn = await connect(paths, [addr], port)
    try:
        return await conn.call(op, args, timeout)
    finally:
        conn.close()


def call_node(paths: Paths, addr: str, op: str, args: dict[str, Any],
              port: int = RPC_PORT, timeout: float = 10.0) -> Any:
    return asyncio.run(acall_node(paths, addr, op, args, port, timeout))
