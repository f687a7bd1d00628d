"""Node-to-node RPC: TLS 1.3 with mutual authentication against the cluster CA, msgpack frames.

hakitd listens on RPC_PORT on each of its node's addresses in cluster.xml.  Both sides
present a node certificate signed by the cluster CA and not retired (node/trust.py).  The
server serves a certificate only if it names (CN) a node of its current cluster.xml: a node
removed from it is refused at once; any node may call (every node may already run any
command on every other, so there is nothing finer to grant).  The client checks that the
server's certificate names the node it meant to reach.  Addresses in certificates are not
checked against the peer's address: readdressing a node must not cut it off.  The server
runs TLS itself (_TlsConnection), so that a peer failing the handshake is logged by address
and reason.

ALPN "hakit/1" selects this protocol (another protocol, the web API, is to share the port
under its own ALPN).  On the connection: the request and answer frames of hakit.ipc.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any, cast

from hakit import ipc
from hakit._wire import FrameDecoder, FrameError, pack_frame
from hakit.config.loader import load_cluster
from hakit.errors import HakitError
from hakit.node import pki
from hakit.paths import Paths
from hakit.runtime.identity import local_node
from hakit.runtime.rpc_client import ALPN, HANDSHAKE_TIMEOUT, RPC_PORT, peer_name, reason, tls_context
from hakit.throttle import Throttle

IP_FREEBIND = 15  # Linux; not exported by the socket module
# What other nodes may ask; everything else stays on the local socket.
SERVED = frozenset({"ping", "cli", "apply_cluster", "apply_module", "module_state", "web_read",
                    "web_users"})


# ---------------------------------------------------------------- server


class _TlsConnection(asyncio.Protocol):
    """One accepted connection.  TLS runs here, over memory buffers, rather than in the event
    loop: the loops drop a failed handshake without a word, and switching a plain connection
    to TLS afterwards (start_tls) can lose a fast client's first bytes."""

    def __init__(self, server: RpcServer, ctx: ssl.SSLContext) -> None:
        self.server = server
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self._in, self._out, server_side=True)
        self.reader = asyncio.StreamReader()
        self.where = "?"
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.where = "{}:{}".format(*transport.get_extra_info("peername")[:2])
        self._timer = asyncio.get_running_loop().call_later(
            HANDSHAKE_TIMEOUT, self.drop, "TLS handshake failed: no answer in time")

    def data_received(self, data: bytes) -> None:
        self._in.write(data)
        try:
            if self._task is None and not self._handshake():
                return
            while chunk := self.tls.read(65536):
                self.reader.feed_data(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self.reader.feed_eof()
        except ssl.SSLError as exc:
            self._flush()  # the alert tells the peer why
            self.drop(("" if self._task else "TLS handshake failed: ") + reason(exc))
            return
        self._flush()

    def _handshake(self) -> bool:
        """True once done (SSLWantReadError while the peer has more to say)."""
        self.tls.do_handshake()
        if self._timer:
            self._timer.cancel()
        self._flush()
        if self.tls.selected_alpn_protocol() != ALPN:
            self.drop(f"it does not speak {ALPN}")
            return False
        self._task = asyncio.ensure_future(self.server._serve(self))
        return True

    def write(self, data: bytes) -> None:
        if self._closed:
            return  # the peer is gone, or was dropped: nobody to answer
        with contextlib.suppress(ssl.SSLError):  # the peer ended TLS (close_notify) before the answer
            self.tls.write(data)
        self._flush()

    def _flush(self) -> None:
        if (out := self._out.read()) and self._transport:
            self._transport.write(out)

    def drop(self, reason: str) -> None:
        if (line := self.server.drop_log(f"dropped {self.where}: {reason}")) is not None:
            self.server.log(line)
        self.close()

    def close(self) -> None:
        self._closed = True
        if self._timer:
            self._timer.cancel()
        if self._transport and not self._transport.is_closing():
            with contextlib.suppress(ssl.SSLError):
                self.tls.unwrap()  # queues our close_notify; the peer's is not awaited
            self._flush()
            self._transport.close()
        self.reader.feed_eof()

    def eof_received(self) -> bool:
        self.reader.feed_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is None and not self._closed:
            # A client refusing our certificate may just hang up, without an alert.
            self.drop("the peer left during the TLS handshake")
        self.close()


DROP_LOG_INTERVAL_S = 10.0  # at most DROP_LOG_BURST lines about dropped peers per interval
DROP_LOG_BURST = 10


def _log(message: str) -> None:
    print(f"hakitd: rpc: {message}", file=sys.stderr, flush=True)


class RpcServer:
    """The listener of one hakitd; sits in front of the daemon's request handler."""

    def __init__(self, p: Paths, handler: ipc.Handler, port: int = RPC_PORT,
                 log: Callable[[str], None] = _log) -> None:
        self.paths = p
        self.handler = handler
        self.port = port
        self.log = log
        # Anyone reaching the port can fail a handshake, from any address.
        self.drop_log = Throttle(DROP_LOG_INTERVAL_S, burst=DROP_LOG_BURST)
        self._ctx: ssl.SSLContext | None = None
        self._me = "?"
        self._nodes: frozenset[str] = frozenset()  # whom it serves: the nodes of cluster.xml
        self._retired: frozenset[str] = frozenset()
        self._addrs: list[str] = []
        self._servers: list[asyncio.AbstractServer] = []

    async def handle(self, op: str, args: dict[str, Any], user: str) -> Any:
        """The daemon's handler, plus `rpc_reload` (after credentials or cluster.xml changed
        on this node) and a reload after each applied cluster configuration."""
        if op == "rpc_reload":
            done = await self.reload()
            await self.handler("web_reload", {}, user)  # the web listener uses the same files
            return done
        result = await self.handler(op, args, user)
        if op == "apply_cluster":
            await self.reload()
        return result

    async def reload(self) -> dict[str, Any]:
        """Read cluster.xml and the credentials again; listen on this node's addresses."""
        try:
            cluster = load_cluster(self.paths.cluster_xml)
            me = local_node(cluster)
            addrs = pki.node_addresses(cluster, me)
            self._ctx = tls_context(self.paths, server=True)
            self._retired = pki.retired(self.paths)
        except HakitError as exc:
            self._close_servers()
            self._addrs = []
            self.log(f"not listening: {str(exc).splitlines()[0]}")
            return {"listening": []}
        self._me, self._nodes = me, frozenset(cluster.node_names)
        if addrs != self._addrs:
            loop = asyncio.get_running_loop()
            self._close_servers()
            self._addrs = addrs
            for addr in addrs:
                try:
                    server = await loop.create_server(self._connection, sock=self._socket(addr))
                    self._servers.append(server)
                except OSError as exc:
                    self.log(f"cannot listen on {addr}:{self.port}: {reason(exc)}")
            self.log(f"listening on {', '.join(f'{a}:{self.port}' for a in addrs)}")
        return {"listening": [f"{a}:{self.port}" for a in self._addrs]}

    def _socket(self, addr: str) -> socket.socket:
        family, kind, proto, _name, sockaddr = socket.getaddrinfo(addr, self.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET:
                # Bound even while the address is not up yet (hakitd started before the network).
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.bind(sockaddr)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _close_servers(self) -> None:
        for server in self._servers:
            server.close()
        self._servers = []

    def close(self) -> None:
        self._close_servers()

    def _connection(self) -> _TlsConnection:
        assert self._ctx is not None  # set before any listener exists
        return _TlsConnection(self, self._ctx)

    async def _serve(self, conn: _TlsConnection) -> None:
        try:
            await self._requests(conn)
        except Exception as exc:  # a bug must cost this connection only, and say why in one line
            conn.drop(f"internal error: {type(exc).__name__}: {exc}")
        else:
            conn.close()

    async def _requests(self, conn: _TlsConnection) -> None:
        peer = peer_name(conn.tls)
        if refusal := self._refusal(peer, conn.tls.getpeercert(binary_form=True) or b""):
            conn.write(pack_frame({"ok": False, "error": f"{self._me} refuses {peer}: {refusal}"}))
            conn.drop(f"{peer}: {refusal}")
            return
        decoder = FrameDecoder()
        while data := await conn.reader.read(65536):
            try:
                requests = decoder.feed(data)
            except FrameError as exc:
                conn.write(pack_frame({"ok": False, "error": str(exc)}))
                conn.drop(f"{peer}: {exc}")
                return
            for req in requests:
                if isinstance(req, dict):
                    # Who asked, as the certificate says, not as the request claims.
                    req["user"] = f"{req.get('user', '?')}@{peer}"
                conn.write(pack_frame(await ipc.dispatch(self._served, req)))

    def _refusal(self, peer: str, der: bytes) -> str | None:
        if peer not in self._nodes:
            return "its certificate names no node of cluster.xml"
        if pki.cert_id(der) in self._retired:
            return "its certificate is retired"
        return None

    async def _served(self, op: str, args: dict[str, Any], user: str) -> Any:
        if op not in SERVED:
            raise HakitError(f"'{op}' is not served to other nodes")
        return await self.handle(op, args, user)
