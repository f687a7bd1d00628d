"""intf checker: a network link is up (administratively up and carrier present),
from rtnetlink link events."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from pyroute2.netlink.rtnl import RTMGRP_LINK
from pyroute2.netlink.rtnl.ifinfmsg import IFF_LOWER_UP, IFF_UP

from hakit.check.base import CheckContext
from hakit.check.netlink import ADDRESSES, LINKS, NetlinkChecker, dump
from hakit.config.module_model import IntfChecker


class IntfCheck(NetlinkChecker):
    kind, rule_prefix = IntfChecker.RESOURCE, IntfChecker.RULE_PREFIX
    groups = RTMGRP_LINK
    what = LINKS

    def __init__(self, ctx: CheckContext, ident: str, ifname: str, when: str, action: str | None) -> None:
        super().__init__(ctx)
        self.ident, self.ifname, self.when, self.action = ident, ifname, when, action
        self._index: int | None = None
        self._up = False

    def reset(self) -> None:
        self._index, self._up = None, False

    def on_message(self, msg: Any) -> None:
        if msg.get_attr("IFLA_IFNAME") != self.ifname:
            if msg["index"] == self._index:  # renamed away
                self.reset()
            return
        if msg.get("event") == "RTM_DELLINK":
            self.reset()
            return
        flags = msg["flags"]
        self._index, self._up = msg["index"], bool(flags & IFF_UP and flags & IFF_LOWER_UP)

    def is_up(self) -> bool:
        return self._up

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "interface": self.ifname}


def interface_holding(addr: str) -> str | None:
    """The local interface whose subnet holds addr (an address or a host name)."""
    try:
        target = ipaddress.ip_address(socket.getaddrinfo(addr, None, type=socket.SOCK_STREAM)[0][4][0])
    except (OSError, ValueError):
        return None
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in dump(LINKS)}
    for a in dump(ADDRESSES):
        local = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
        net = ipaddress.ip_network(f"{local}/{a['prefixlen']}", strict=False)
        if target in net and net.prefixlen < net.max_prefixlen:
            return names.get(a["index"])
    return None
