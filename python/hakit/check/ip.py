"""ip checker: an address is configured on a local interface, from rtnetlink address events."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR

from hakit.check.base import CheckContext
from hakit.check.netlink import ADDRESSES, NetlinkChecker
from hakit.config.module_model import IpChecker
from hakit.errors import HakitError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


async def resolve(host: str) -> Address:
    """An address as written, or the first address of a host name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise HakitError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    return ipaddress.ip_address(infos[0][4][0])


class IpCheck(NetlinkChecker):
    kind, rule_prefix = IpChecker.RESOURCE, IpChecker.RULE_PREFIX
    groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
    what = ADDRESSES

    def __init__(self, ctx: CheckContext, ident: str, addr: str, when: str, action: str | None) -> None:
        super().__init__(ctx)
        self.ident, self.addr, self.when, self.action = ident, addr, when, action
        self._ip: Address | None = None
        self._holders: set[tuple[int, int]] = set()  # (interface index, prefix length)

    async def start(self) -> None:
        self._ip = await resolve(self.addr)
        await super().start()

    def reset(self) -> None:
        self._holders = set()

    def on_message(self, msg: Any) -> None:
        # IFA_LOCAL is the local end of a point-to-point address; IPv6 has only IFA_ADDRESS.
        local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if local is None or ipaddress.ip_address(local) != self._ip:
            return
        key = (msg["index"], msg["prefixlen"])
        if msg.get("event") == "RTM_DELADDR":
            self._holders.discard(key)
        else:
            self._holders.add(key)

    def is_up(self) -> bool:
        return bool(self._holders)

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "addr": self.addr}
