"""ping checker: <to addr> answers an ICMP echo within timeout, tested every interval.

The echo goes over a raw socket (hakit runs as root), connected to the target so
that the kernel hands over only its packets.  Within the timeout the request is
repeated every RESEND_S: one lost packet on a busy LAN is not a dead host.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import struct
from typing import Any

from hakit.check.base import CheckContext, PeriodicChecker
from hakit.config.module_model import PingChecker
from hakit.errors import HakitError

RESEND_S = 0.5
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
_ECHO = struct.Struct("!BBHHH")  # type, code, checksum, id, sequence
_sequence = itertools.count(1)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(family: int, ident: int, seq: int) -> bytes:
    payload = b"hakit-ping"
    if family == socket.AF_INET6:
        # The kernel fills in the checksum of ICMPv6 raw sockets.
        return _ECHO.pack(ICMP6_ECHO_REQUEST, 0, 0, ident, seq) + payload
    head = _ECHO.pack(ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return _ECHO.pack(ICMP_ECHO_REQUEST, 0, _checksum(head + payload), ident, seq) + payload


def _is_reply(family: int, packet: bytes, ident: int) -> bool:
    if family == socket.AF_INET:
        packet = packet[(packet[0] & 0x0F) * 4 :]  # IPv4 raw sockets deliver the IP header
    if len(packet) < _ECHO.size:
        return False
    kind, _code, _sum, got_id, _seq = _ECHO.unpack_from(packet)
    wanted = ICMP6_ECHO_REPLY if family == socket.AF_INET6 else ICMP_ECHO_REPLY
    return kind == wanted and got_id == ident


def raw_socket(family: int) -> socket.socket:
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        return socket.socket(family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto)
    except PermissionError:
        raise HakitError("ping needs root (a raw ICMP socket)") from None


async def ping(addr: str, timeout: float) -> bool:
    """Whether addr answers an ICMP echo within timeout seconds."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(addr, None, type=socket.SOCK_RAW), timeout)
    except (OSError, TimeoutError):
        return False
    family, _t, _p, _c, sockaddr = infos[0]
    ident = (os.getpid() ^ id(asyncio.current_task())) & 0xFFFF
    with raw_socket(family) as sock:
        sock.setblocking(False)
        try:
            sock.connect(sockaddr)
        except OSError:
            return False  # no route

        async def exchange() -> None:
            while True:
                with contextlib.suppress(OSError):  # unreachable now: try again at the next send
                    sock.send(_echo_request(family, ident, next(_sequence) & 0xFFFF))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESEND_S):
                        while not _is_reply(family, await loop.sock_recv(sock, 2048), ident):
                            pass
                        return

        try:
            await asyncio.wait_for(exchange(), timeout)
        except (TimeoutError, OSError):
            return False
        return True


class PingCheck(PeriodicChecker):
    kind, rule_prefix = PingChecker.RESOURCE, PingChecker.RULE_PREFIX

    def __init__(self, ctx: CheckContext, cfg: PingChecker, when: str) -> None:
        super().__init__(ctx)
        self.ident, self.when, self.action = cfg.ident, when, cfg.action
        self.addr, self.interval, self.timeout = cfg.to.addr, cfg.to.interval, cfg.to.timeout

    async def start(self) -> None:
        raw_socket(socket.AF_INET).close()  # refuse now, not as a "down" later
        await super().start()

    async def probe(self) -> bool:
        return await ping(self.addr, self.timeout)

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "addr": self.addr, "interval": self.interval, "timeout": self.timeout}
