"""The mirror's virtual IP: <virtual_addr where="one_side_alias"> (and "alias", the same on
a mirror) inside <real_interface>, held by the primary only.

take() adds each address to its interface with the interface's own MAC, then announces it
with gratuitous ARP so that neighbours switch at once instead of black-holing the address
until their ARP entry expires; release() removes it.  Netlink work runs in a worker thread
(pyroute2's synchronous API runs its own event loop, which cannot nest in the module's).

Placement of an address, decided when it is taken (interfaces can change while the module
is stopped): the interface named by <interface name>, else the one holding a subnet that
contains the VIP; prefix length = netmask, else the prefix of that subnet.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hakit.config.module_model import Interface, RealInterface, Vip, VirtualAddr, VirtualInterface
from hakit.errors import HakitError
from hakit.runtime.log import ModuleLog
from hakit.store.module_store import Level
from hakit.vip import garp

SOURCE = "vip"
# The first announcement goes out with take(); a few more, spaced so that one lost frame
# (a busy switch, a neighbour's full backlog) does not matter.
ANNOUNCE_ROUNDS = 3
ANNOUNCE_SPACING = 0.05
# arpreroute="on": how often the announcement is repeated while the address is held, for
# neighbours that missed it (or whose entry was overwritten since).
REROUTE_INTERVAL = 5.0
LABEL_SUFFIX = ":hk"
IFNAMSIZ = 16  # the kernel's limit on a name or label, with its terminating NUL
IFF_LOOPBACK = 0x8

T = TypeVar("T")


@dataclass(frozen=True)
class Placement:
    """Where one virtual IP goes on this node."""

    addr: str
    prefixlen: int
    ifname: str
    index: int
    mac: bytes
    reroute: bool

    @property
    def label(self) -> str | None:
        """ifconfig shows the alias as eth0:hk; a name too long for one gets no label."""
        label = self.ifname + LABEL_SUFFIX
        return label if len(label) < IFNAMSIZ else None

    def __str__(self) -> str:
        return f"{self.addr}/{self.prefixlen} on {self.ifname}"


@dataclass(frozen=True)
class _Present:
    """A copy of a virtual IP found on this node."""

    addr: str
    prefixlen: int
    ifname: str
    index: int

    def __str__(self) -> str:
        return f"{self.addr}/{self.prefixlen} from {self.ifname}"


class MirrorVip:
    """The virtual IPs of one mirror module on this node."""

    def __init__(self, vip_config: Vip, log: ModuleLog, reroute_interval: float = REROUTE_INTERVAL) -> None:
        self._config = vip_config
        self._log = log
        self._reroute_interval = reroute_interval
        self._held: list[Placement] = []
        self._announcer: asyncio.Task[None] | None = None
        self._netlink: asyncio.Future[Any] | None = None

    def held(self) -> bool:
        return bool(self._held)

    async def take(self) -> None:
        """Add every address and announce it; HakitError (nothing left added) when one cannot be."""
        await self._stop_announcing()
        placements: list[Placement] = await self._in_thread(add_all, self._config)
        self._held = placements
        for p in placements:
            self._log(Level.EVENT, SOURCE, f"virtual IP {p} added, announced by gratuitous ARP")
        self._announce(placements)
        self._announcer = asyncio.create_task(self._keep_announcing(placements))

    async def release(self) -> None:
        """Remove every address of the module that this node has; nothing to do is no error."""
        await self._stop_announcing()
        await self._remove("removed")
        self._held = []

    async def clear_stale(self) -> None:
        """At module start: remove addresses a crashed run of the module left behind."""
        await self._remove("removed: left by a previous run of the module")

    async def _remove(self, what: str) -> None:
        held = {p.addr for p in self._held}
        removed, problems = await self._in_thread(remove_module_addrs, self._config, held)
        for problem in problems:
            self._log(Level.INFO, SOURCE, problem)
        for p in removed:
            self._log(Level.EVENT, SOURCE, f"virtual IP {p} {what}")

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Netlink work, one change at a time.  A caller cancelled meanwhile (a stop
        overtaking a take) does not cut the change short: the next call waits for it."""
        pending = self._netlink
        if pending is not None and not pending.done():
            await asyncio.wait({pending})
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        # Its error belongs to the caller; a cancelled caller has left, nobody else wants it.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._netlink = future
        return await asyncio.shield(future)

    def _announce(self, placements: Iterable[Placement]) -> None:
        """One round; a raw send does not block, so it runs in the event loop."""
        by_link: dict[tuple[str, bytes], list[str]] = {}
        for p in placements:
            by_link.setdefault((p.ifname, p.mac), []).append(p.addr)
        for (ifname, mac), addrs in by_link.items():
            try:
                garp.announce(ifname, mac, addrs)
            except OSError as exc:
                # The address is set; a link that is down is the interface checker's business.
                self._log(Level.INFO, SOURCE, f"gratuitous ARP on {ifname} failed: {exc.strerror}")

    async def _keep_announcing(self, placements: list[Placement]) -> None:
        for _ in range(ANNOUNCE_ROUNDS - 1):
            await asyncio.sleep(ANNOUNCE_SPACING)
            self._announce(placements)
        repeated = [p for p in placements if p.reroute]
        while repeated:
            await asyncio.sleep(self._reroute_interval)
            self._announce(repeated)

    async def _stop_announcing(self) -> None:
        task, self._announcer = self._announcer, None
        if task is not None:
            task.cancel()
            # wait(), not await: the task's cancellation is not ours to raise.
            await asyncio.wait({task})


# ---------------------------------------------------------------- netlink (worker thread)


def _holder(itf: Interface, shared: bool) -> RealInterface | VirtualInterface | None:
    """The mirror's addresses are in <real_interface>, the farm's in <virtual_interface>."""
    return itf.virtual if shared else itf.real


def addrs_of(config: Vip, shared: bool) -> list[VirtualAddr]:
    return [va for itf in config.interfaces.interfaces if (h := _holder(itf, shared)) for va in h.addrs]


def _ipv4(va: VirtualAddr) -> str:
    raw = va.addr
    try:
        return str(ipaddress.IPv4Address(raw))
    except ValueError:
        pass
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        pass
    else:
        raise HakitError(f"virtual IP {raw}: only IPv4 addresses are supported")
    try:
        return socket.gethostbyname(raw)
    except OSError:
        raise HakitError(f"virtual IP {raw}: cannot resolve this name to an IPv4 address") from None


def _netlink_error(action: str, exc: NetlinkError) -> HakitError:
    return HakitError(f"cannot {action}: {os.strerror(exc.code)}")


def place(ipr: IPRoute, config: Vip, shared: bool) -> list[Placement]:
    links = {link["index"]: link for link in ipr.get_links()}
    # (index, network) of every IPv4 address, loopback left out: no VIP belongs there.
    nets = [
        (a["index"], a.get("address"), ipaddress.IPv4Network(f"{a.get('address')}/{a['prefixlen']}", False))
        for a in ipr.get_addr(family=socket.AF_INET)
        if not links[a["index"]]["flags"] & IFF_LOOPBACK
    ]
    by_name = {link.get("ifname"): index for index, link in links.items()}
    placements = []
    for itf in config.interfaces.interfaces:
        holder = _holder(itf, shared)
        for va in holder.addrs if holder else ():
            addr = _ipv4(va)
            ip = ipaddress.IPv4Address(addr)
            # The VIP's own copy (left by a crash) is no evidence of where it belongs.
            holders = sorted(
                ((net.prefixlen, index) for index, own, net in nets if ip in net and own != addr),
                reverse=True,
            )
            if itf.name is not None:
                index = by_name.get(itf.name)
                if index is None:
                    raise HakitError(f"virtual IP {addr}: interface {itf.name} does not exist on this node")
                own = [prefix for prefix, i in holders if i == index]
                if va.netmask is None and not own:
                    raise HakitError(
                        f"virtual IP {addr}: no address of {itf.name} is in a subnet holding it; "
                        "give <virtual_addr netmask=\"…\">"
                    )
                prefixlen = va.netmask if va.netmask is not None else own[0]
            else:
                if not holders:
                    raise HakitError(
                        f"virtual IP {addr}: no interface of this node has an address in its subnet; "
                        "name one with <interface name=\"…\">"
                    )
                prefixlen, index = holders[0]
                if va.netmask is not None:
                    prefixlen = va.netmask
            link = links[index]
            placements.append(
                Placement(
                    addr=addr,
                    prefixlen=prefixlen,
                    ifname=link.get("ifname"),
                    index=index,
                    mac=garp.mac_bytes(link.get("address")),
                    reroute=itf.arpreroute,
                )
            )
    return placements


def _present(ipr: IPRoute, addrs: set[str]) -> list[_Present]:
    names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
    found = []
    for a in ipr.get_addr(family=socket.AF_INET):
        # The local end: on a point-to-point link "address" is the peer's.
        local = a.get("local") or a.get("address")
        if local in addrs:
            found.append(_Present(local, a["prefixlen"], names.get(a["index"], str(a["index"])), a["index"]))
    return found


def _delete(ipr: IPRoute, p: _Present) -> bool:
    try:
        ipr.addr("del", index=p.index, address=p.addr, prefixlen=p.prefixlen)
    except NetlinkError as exc:
        if exc.code == errno.EADDRNOTAVAIL:  # gone meanwhile: what was wanted
            return False
        raise _netlink_error(f"remove virtual IP {p}", exc) from None
    return True


def add_all(config: Vip, shared: bool = False) -> list[Placement]:
    with IPRoute() as ipr:
        placements = place(ipr, config, shared)
        added: list[Placement] = []
        try:
            for p in placements:
                # A copy elsewhere (a crash, a changed netmask) would answer beside the new one.
                for old in _present(ipr, {p.addr}):
                    if (old.index, old.prefixlen) != (p.index, p.prefixlen):
                        _delete(ipr, old)
                extra = {"label": p.label} if p.label else {}
                try:
                    ipr.addr("replace", index=p.index, address=p.addr, prefixlen=p.prefixlen, **extra)
                except NetlinkError as exc:
                    raise _netlink_error(f"add virtual IP {p}", exc) from None
                added.append(p)
        except HakitError:
            # All or nothing: a half-held VIP set would look like a working primary.
            for p in added:
                for old in _present(ipr, {p.addr}):
                    with contextlib.suppress(HakitError):
                        _delete(ipr, old)
            raise
        return placements


def remove_module_addrs(config: Vip, held: set[str],
                        shared: bool = False) -> tuple[list[_Present], list[str]]:
    """Remove the module's addresses (those held, plus the configured ones that resolve now)
    wherever they are; returns what was removed, and names that did not resolve."""
    addrs, problems = set(held), []
    for va in addrs_of(config, shared):
        try:
            addrs.add(_ipv4(va))
        except HakitError as exc:
            # Not added by this run unless it resolved then, and then it is in held.
            problems.append(str(exc))
    return remove_addrs(addrs), problems


def remove_addrs(addrs: set[str]) -> list[_Present]:
    """Remove these addresses from whichever interfaces have them."""
    with IPRoute() as ipr:
        return [p for p in _present(ipr, addrs) if _delete(ipr, p)]
