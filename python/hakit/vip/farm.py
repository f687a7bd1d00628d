"""The farm's shared virtual IPs: <virtual_interface> addresses on every UP node, and
the eBPF filter (ebpf/farm_lb.bpf.c, loaded through hakit._farm_lb) that lets each
node accept only its share of the clients.  Behaviour and guarantees: docs/farm.md.

The filter and its maps are pinned in a bpffs under /run/hakit/bpf/AM, so they outlive
this process: a respawned module process adopts them, and the data plane keeps
filtering meanwhile.  Only `release()` (the module stopping) detaches and unpins.

Ownership is coordinated through the heartbeats.  Each node advertises whether its
share is open, since when, its MAC and the members it counts (its view).  From its own
view a node computes every group's bucket table (hakit.vip.buckets); it gives up the
buckets the table takes from it at once, and takes a bucket the table gives it only
when no live peer still claims it under that peer's advertised view.  So a bucket is
never owned by two nodes; it may be owned by nobody for one heartbeat round trip while
a node joins, or for the failure detection time when its owner dies.

The filter's attachments are watched (hakit.vip.watch): one removed is attached again,
and while one cannot be, this node is no member (`missing`), whatever `opened` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakit.config.module_model import Vip
from hakit.errors import HakitError
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.store.module_store import Level
from hakit.vip import alias, buckets, garp
from hakit.vip.watch import FilterWatch

SOURCE = "vip"
STATS_INTERVAL = 10.0  # counters and connections.<addr> (the seeds' product's period)
# tc filter identity: one filter per module on an interface, found again by a new process.
TC_HANDLE_BASE = 0x484B0000
TC_PRIORITY_BASE = 0x4800
HOOKS = ("tc", "xdp")
RuleEntry = tuple[str, int, str, int, int]  # (vip, port (0: every port), proto, group, filter)
TCP_ESTABLISHED = 1
# A peer that opens is counted after this many heartbeat timeouts, together with every
# other one that opened meanwhile: joins close together are one change, and a peer that
# flaps is counted again once, when it has stayed.
ADMIT_HOLD_TIMEOUTS = 2
# The view (every member's name) rides in each heartbeat, which must fit one frame.
VIEW_BYTES = 900
FILTER_RESOURCE = "vip.filter"  # attached, or missing on IFNAME: why (docs/farm.md)


def _binding() -> Any:
    """hakit._farm_lb, imported when a farm needs it (it links libbpf)."""
    from hakit import _farm_lb

    return _farm_lb


def _os_error(what: str, exc: OSError) -> HakitError:
    # The binding may add libbpf's log on further lines: the module log gets the first.
    return HakitError(f"{what}: {(exc.strerror or str(exc)).splitlines()[0]}")


@dataclass(frozen=True)
class Group:
    name: str
    index: int
    powers: dict[str, int]  # every node of the module; nodes not listed in <cluster> have power 1


def virtual_mac(config: Vip, first_vip: str) -> bytes:
    """<virtual_interface addr>, else a locally administered unicast MAC made from the VIP."""
    for itf in config.interfaces.interfaces:
        if itf.virtual is not None and itf.virtual.addr:
            return garp.mac_bytes(itf.virtual.addr)
    return b"\x02\x48" + ipaddress.IPv4Address(first_vip).packed


def _uniform(config: Vip, what: str) -> str:
    """The type or hook of every <virtual_interface> (the configuration model checks they agree)."""
    shared = [itf.virtual for itf in config.interfaces.interfaces if itf.virtual is not None]
    return str(getattr(shared[0], what))


def delivery(config: Vip) -> str:
    return _uniform(config, "type")


def groups_of(config: Vip, nodes: list[str]) -> list[Group]:
    out = []
    groups = config.loadbalancing.groups if config.loadbalancing else ()
    for i, g in enumerate(groups):
        powers = dict.fromkeys(nodes, 1)
        for host in g.cluster.hosts if g.cluster else ():
            if host.name in powers:
                powers[host.name] = host.power
        out.append(Group(g.name, i, powers))
    return out


def rules_of(config: Vip, vips: list[str]) -> list[RuleEntry]:
    """(vip, port (0 = every port), proto, group, filter) entries of the rule map (within
    its size: the configuration model checks the rules)."""
    f = _binding()
    filters = {"on_addr": f.FILTER_ON_ADDR, "on_port": f.FILTER_ON_PORT, "on_ipid": f.FILTER_ON_IPID}
    out: dict[tuple[str, int, str], tuple[int, int]] = {}
    groups = config.loadbalancing.groups if config.loadbalancing else ()
    for gi, g in enumerate(groups):
        for r in g.rules:
            targets = vips if r.virtual_addr in ("*", "") else [r.virtual_addr]
            for vip in targets:
                if vip not in vips:
                    # (the configuration check compares the text; here the VIPs are resolved)
                    raise HakitError(f"<rule virtual_addr=\"{vip}\"> of group {g.name} "
                                     "is not a VIP of the module as resolved")
                if r.port == "*":
                    ports = [0]
                else:
                    lo, _, hi = r.port.partition("-")
                    ports = list(range(int(lo), int(hi or lo) + 1))
                for port in ports:
                    out.setdefault((vip, port, r.proto), (gi, filters[r.filter]))
    return [(vip, port, proto, gi, flt) for (vip, port, proto), (gi, flt) in out.items()]


class FarmVip:
    """The farm's VIPs and filter on this node."""

    def __init__(self, config: Vip, module: str, module_id: int, node: str, nodes: list[str],
                 pin_root: Path, log: ModuleLog, resources: Resources,
                 on_change: Callable[[], None] = lambda: None,
                 on_filter: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.module = module
        self.node = node
        self.nodes = sorted(nodes)
        self.pin_dir = pin_root / module
        self.pin_root = pin_root
        self.log = log
        self.resources = resources
        self.on_change = on_change  # this node's advertisement changed: send it
        self.on_filter = on_filter  # the filter went missing or came back (`missing`)
        self.mode = delivery(config)
        self.hook = _uniform(config, "hook")
        self.handle = TC_HANDLE_BASE + module_id
        self.priority = TC_PRIORITY_BASE + module_id % 0x400
        self.groups = groups_of(config, self.nodes)
        self.opened = False
        self.since = 0.0  # when the share opened: the oldest member is the elected node
        self.settled = False  # peers have had time to be heard: claims are safe
        self.maps: Any = None
        self.placements: list[alias.Placement] = []
        self.hooks: dict[int, str] = {}  # interface index -> hook the filter is attached to
        self.missing: dict[str, str] = {}  # interface -> why its filter cannot be restored
        self.watch: FilterWatch | None = None
        self.peers: dict[str, dict[str, Any] | None] = {}
        self.view: tuple[str, ...] = ()
        self.hold = 0.0  # how long a peer that opens waits for admission into the view
        self.admitted: set[str] = set()
        self.waiting: dict[str, float] = {}  # open peers not yet admitted: since when
        self._admission: asyncio.TimerHandle | None = None
        self.owners: dict[int, tuple[str, ...]] = {}
        self.prevs: dict[int, list[str]] = {}
        self.director = ""
        self.vmac = b"\0" * 6
        self.announced: tuple[str, ...] = ()  # the members when the elected node last announced
        self.written: tuple[Any, ...] = ()
        self._inputs: tuple[Any, ...] = ()  # what the tables were last computed from
        self._rows: tuple[tuple[int, bytes, bytes], ...] = ()  # (group, owners, prevs) for the map
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the heartbeats carry
    def payload(self) -> dict[str, Any]:
        mac = self.placements[0].mac.hex() if self.placements else ""
        return {"open": self.member, "since": self.since, "mac": mac, "view": list(self.view)}

    @property
    def member(self) -> bool:
        """Open, settled and filtering: a node that has not yet heard the running members
        claims nothing and is not counted, or it would take every bucket for itself; one
        whose filter is missing would own buckets nobody serves."""
        return self.opened and self.settled and not self.missing

    @property
    def index(self) -> int:
        return self.nodes.index(self.node)

    # -- life cycle
    async def setup(self, settle_after: float) -> None:
        """Load (or adopt) the filter, attach it, add the VIPs; the share stays closed."""
        f = _binding()
        placements, hooks, rules = await self._resolve(self.config, self.groups)
        vips = [p.addr for p in placements]
        self.placements = placements
        self.vmac = virtual_mac(self.config, vips[0])
        self.hold = ADMIT_HOLD_TIMEOUTS * settle_after
        try:
            f.ensure_bpffs(str(self.pin_root))
            try:
                maps = f.Maps(str(self.pin_dir))
                adopted = True
            except FileNotFoundError:
                f.load(str(_object_path()), str(self.pin_dir))
                maps = f.Maps(str(self.pin_dir))
                adopted = False
        except OSError as exc:
            raise _os_error("cannot load the farm's eBPF filter", exc) from None
        # From here heartbeat news may write the maps (apply() needs them set).
        self.maps = maps
        # The filter goes in before the addresses: the stack must never see the VIP's
        # traffic unfiltered.
        try:
            self.maps.set_vips(vips)
            self.maps.set_rules(rules)
            self._write(force=True)
            for ifindex, hook in hooks.items():
                self.maps.attach(ifindex, hook, self.handle, self.priority)
        except OSError as exc:
            raise _os_error("cannot set up the farm's eBPF filter", exc) from None
        self.hooks = hooks
        await asyncio.to_thread(_prepare_links, placements, self._flood_mac())
        await asyncio.to_thread(alias.add_all, self.config, True)
        how = (f"answered with virtual MAC {_mac(self.vmac)}, flooded to every node"
               if self.mode == "vmac_invisible"
               else "answered by the elected node, which forwards the others' shares")
        for p in placements:
            self.log(Level.EVENT, SOURCE, f"virtual IP {p} shared ({self.mode}: {how})"
                     + ("; filter adopted from the previous run" if adopted else ""))
        if self.mode == "vmac_invisible":
            self._announce(self.vmac)
        self._tasks = [asyncio.create_task(self._settle(settle_after)), asyncio.create_task(self._poll())]
        self._show_filter()
        if self.watch is None:
            self.watch = FilterWatch(self)
            self.watch.start()
        else:
            self.watch.wake()  # set up again (stopstart): the watch never stopped

    async def reload(self, config: Vip) -> None:
        """`hakit update`: addresses, rules and powers of the new configuration."""
        if delivery(config) != self.mode or _uniform(config, "hook") != self.hook:
            raise HakitError("update cannot change <virtual_interface type> or hook: "
                             "stop and start the module")
        groups = groups_of(config, self.nodes)
        placements, hooks, rules = await self._resolve(config, groups)
        self.config = config
        self.groups = groups
        vips = [p.addr for p in placements]
        self.vmac = virtual_mac(config, vips[0])
        try:
            for ifindex, hook in hooks.items():
                if ifindex not in {p.index for p in self.placements}:
                    self.maps.attach(ifindex, hook, self.handle, self.priority)
            self.maps.set_vips(vips)
            self.maps.set_rules(rules)
        except OSError as exc:
            raise _os_error("cannot update the farm's eBPF filter", exc) from None
        self.hooks = hooks
        await asyncio.to_thread(_prepare_links, placements, self._flood_mac())
        await asyncio.to_thread(alias.add_all, config, True)
        stale = {p.addr for p in self.placements} - set(vips)
        for gone in await asyncio.to_thread(alias.remove_addrs, stale):
            self.log(Level.EVENT, SOURCE, f"virtual IP {gone} removed (no longer configured)")
        self.placements = placements
        self.log(Level.EVENT, SOURCE, "configuration of the virtual IPs and load balancing applied")
        self.apply()  # its write covers every map but the VIPs and rules, set above

    async def _resolve(self, config: Vip, groups: list[Group],
                       ) -> tuple[list[alias.Placement], dict[int, str], list[RuleEntry]]:
        """Where the VIPs go (the mirror's placement rules), the hook on each interface,
        the rule map's entries; HakitError beyond the filter's limits."""
        f = _binding()
        placements = await asyncio.to_thread(_place, config)
        hooks = await asyncio.to_thread(_hooks_for, self.hook, {p.index for p in placements})
        if len(self.nodes) > f.MAX_NODES:
            raise HakitError(f"a farm has at most {f.MAX_NODES} nodes")
        names = sum(len(n.encode()) + 1 for n in self.nodes)
        if names > VIEW_BYTES:
            raise HakitError(f"the farm's node names take {names} bytes in every heartbeat (its view), "
                             f"more than {VIEW_BYTES}: fewer nodes or shorter names")
        return placements, hooks, rules_of(config, [p.addr for p in placements])

    async def relocate(self) -> None:
        """The filter, then the VIPs, where the VIPs go now: after an interface was created
        again (a new index, perhaps a new MAC), or to put back what a missing filter
        withdrew.  HakitError when they cannot be placed or the filter attached."""
        from pyroute2.netlink.exceptions import NetlinkError

        # (The interface may vanish again meanwhile: whatever fails says so.)
        try:
            placements, hooks, _ = await self._resolve(self.config, self.groups)
            for ifindex, hook in hooks.items():
                self.maps.attach(ifindex, hook, self.handle, self.priority)
            await asyncio.to_thread(_prepare_links, placements, self._flood_mac())
            await asyncio.to_thread(alias.add_all, self.config, True)
        except OSError as exc:
            raise _os_error("cannot place the filter and the virtual IPs again", exc) from None
        except NetlinkError as exc:
            raise HakitError(f"cannot place the virtual IPs: {os.strerror(exc.code)}") from None
        if [p.mac for p in placements] != [p.mac for p in self.placements]:
            self.announced = ()  # a new MAC: the elected node announces it (apply)
        self.placements, self.hooks = placements, hooks
        self.apply()  # peers learn this node's MAC from the heartbeats

    def filter_missing(self, ifname: str, why: str) -> None:
        """The watch cannot restore the filter on ifname: this node is no member until it can."""
        fresh = ifname not in self.missing
        self.missing[ifname] = why
        self._show_filter()
        if fresh:
            self.apply()
            self.on_filter()

    def filter_back(self, ifname: str) -> None:
        self.missing.pop(ifname, None)
        self._show_filter()
        if not self.missing:
            self.since = time.time()  # back as the newest member, not the elected node at once
            self.apply()
            self.on_filter()

    def _show_filter(self) -> None:
        name, why = next(iter(self.missing.items()), ("", ""))
        self.resources.set(FILTER_RESOURCE, f"missing on {name}: {why}" if name else "attached")

    def _flood_mac(self) -> bytes | None:
        return self.vmac if self.mode == "vmac_invisible" else None

    async def _settle(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.settled = True
        self.apply()

    def open(self) -> bool:
        if self.opened:
            return False
        self.opened = True
        self.since = time.time()
        self.log(Level.EVENT, SOURCE, "share of the virtual IP opened: this node takes new clients")
        self.apply()
        return True

    def close(self) -> bool:
        if not self.opened:
            return False
        self.opened = False
        self.log(Level.EVENT, SOURCE, "share of the virtual IP closed: no new client comes to this node")
        self.apply()
        return True

    async def release(self) -> None:
        """The module stops: addresses removed, filter detached and unpinned."""
        if self.watch is not None:
            # First: what follows detaches the filter, which the watch would repair.
            await self.watch.stop()
            self.watch = None
        self.missing = {}
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._admission is not None:
            self._admission.cancel()
            self._admission = None
        self.opened = False
        removed, problems = await asyncio.to_thread(
            alias.remove_module_addrs, self.config, {p.addr for p in self.placements}, True)
        for problem in problems:
            self.log(Level.INFO, SOURCE, problem)
        for p in removed:
            self.log(Level.EVENT, SOURCE, f"virtual IP {p} removed")
        f = _binding()
        maps = self.maps
        if maps is None:
            with contextlib.suppress(FileNotFoundError):
                maps = f.Maps(str(self.pin_dir))
        self.placements = []
        for g in self.groups:
            self.resources.set(f"vip.share.{g.name}", "0")
        self.resources.set(FILTER_RESOURCE, "detached")
        if maps is None:
            return  # never set up, or already released
        # In a thread: detaching lists the interface's tc filters with pyroute2, whose
        # synchronous calls cannot run inside an event loop.
        await asyncio.to_thread(self._detach_everywhere, maps)
        maps.close()
        self.maps = None
        self.written = ()
        try:
            f.unpin(str(self.pin_dir))
        except OSError as exc:
            self.log(Level.CRITICAL, SOURCE, f"cannot remove the farm's eBPF pins: {exc.strerror}")
        else:
            self.log(Level.EVENT, SOURCE, "load-balancing filter detached")

    def _detach_everywhere(self, maps: Any) -> None:
        # Every interface: the placement may have changed since the filter was attached.
        for ifindex in _link_indexes():
            with contextlib.suppress(OSError):
                for hook in HOOKS:  # (the configured hook may have changed since)
                    if maps.attached(ifindex, hook, self.handle, self.priority):
                        maps.detach(ifindex, hook, self.handle, self.priority)

    def disown(self) -> None:
        """After a crash of the module process: give up this node's buckets, keep the rest
        (others' shares still forwarded, established flows still served)."""
        f = _binding()
        try:
            maps = f.Maps(str(self.pin_dir))
        except FileNotFoundError:
            return
        try:
            me = self.index
            for g in self.groups:
                owners, prevs = maps.buckets(g.index)
                mine = bytes(f.NO_NODE if o == me else o for o in owners)
                if mine != owners:
                    kept = bytes(me if o == me else p for o, p in zip(owners, prevs, strict=True))
                    maps.set_buckets(g.index, mine, kept)
        except OSError as exc:
            raise _os_error("cannot close this node's share", exc) from None
        finally:
            maps.close()
        self.log(Level.EVENT, SOURCE, "share of the virtual IP closed after the crash; filter left attached")

    # -- ownership
    def set_peers(self, peers: Mapping[str, dict[str, Any] | None]) -> None:
        """News from the heartbeats: each peer's payload, None when it is not heard."""
        self.peers = {n: (p or {}).get("lb") if p else None for n, p in peers.items()}
        self.apply()

    def _members(self) -> tuple[str, ...]:
        """This node's view: the open peers it admitted, and itself when a member.  A peer
        leaves the view at once (its clients must find a new owner within the detection
        time); one that opens, joins or comes back waits for the next admission, one
        hold after the first of those waiting (docs/farm.md, "Settling")."""
        opened = {n for n, lb in self.peers.items() if lb and lb.get("open")}
        left = self.admitted - opened
        if left and self.member:
            self.log(Level.INFO, SOURCE, f"{', '.join(sorted(left))} no longer counted as members "
                     "(lost or share closed)")
        self.admitted &= opened
        now = time.monotonic()
        self.waiting = {n: self.waiting.get(n, now) for n in opened - self.admitted}
        if not self.member:
            # Nothing of this node's to reshuffle: count what runs.
            self.admitted |= opened
            self.waiting.clear()
        elif self.waiting and self._admission is None:
            self._admission = asyncio.get_running_loop().call_later(self._until_admission(), self._admit)
        out = sorted(self.admitted)
        if self.member:
            out.append(self.node)
        return tuple(sorted(out))

    def _until_admission(self) -> float:
        return max(min(self.waiting.values()) + self.hold - time.monotonic(), 0.0)

    def _admit(self) -> None:
        self._admission = None
        if self.waiting and self._until_admission() > 0:
            # The first waiting left (and maybe came back): the hold counts from the next.
            self._admission = asyncio.get_running_loop().call_later(self._until_admission(), self._admit)
            return
        if self.waiting:
            self.log(Level.INFO, SOURCE, f"{', '.join(sorted(self.waiting))} counted as members "
                     f"(heard open for {self.hold:g} s or with the first of those)")
            self.admitted |= set(self.waiting)
            self.waiting.clear()
        self.apply()

    def apply(self) -> None:
        if self.maps is None:
            return
        before = self.payload()
        self.view = self._members()
        alive = {self.node} | {n for n, lb in self.peers.items() if lb is not None}
        # What the tables depend on: most news (a peer's state, a datagram re-sent)
        # change none of it, and the tables cost milliseconds at 32 nodes.
        inputs = (self.view, alive, self.groups, self.nodes, [
            (n, lb.get("view")) for n, lb in self.peers.items() if lb and lb.get("open")])
        if inputs != self._inputs:
            self._inputs = inputs
            self._tables(alive)
        self._elect()
        self._write()
        if self.payload() != before:
            self.on_change()

    def _tables(self, alive: set[str]) -> None:
        """Every group's owners and previous owners under this node's view, and the rows
        of the filter's bucket map they make."""
        for g in self.groups:
            target = buckets.assign(g.name, {n: g.powers.get(n, 1) for n in self.view}, _binding().NBUCKETS)
            claims = self._claims(g, target)
            old = self.owners.get(g.index)
            prev = self.prevs.setdefault(g.index, [""] * len(target))
            before_me: tuple[str, ...] = ()
            owners = []
            for b, want in enumerate(target):
                if want == self.node and b in claims:
                    want = claims[b]
                owners.append(want)
                if old is not None and old[b] and old[b] != want:
                    prev[b] = old[b]
                elif want == self.node and not prev[b] and (old is None or not old[b]):
                    # Joining, this node has no history of the bucket: its holder until
                    # now is its owner in the table without this node.
                    before_me = before_me or buckets.assign(
                        g.name, {n: g.powers.get(n, 1) for n in self.view if n != self.node}, len(target))
                    prev[b] = before_me[b]
                if prev[b] not in alive or prev[b] == want:
                    prev[b] = ""
            self.owners[g.index] = tuple(owners)
        index, nobody = {n: i for i, n in enumerate(self.nodes)}, itertools.repeat(_binding().NO_NODE)
        self._rows = tuple(
            (g.index, bytes(map(index.get, self.owners[g.index], nobody)),
             bytes(map(index.get, self.prevs[g.index], nobody)))
            for g in self.groups)

    def _elect(self) -> None:
        # Among the members counted: a node back from a short loss is not elected again
        # before it is counted again.
        since = {n: float(lb.get("since", 0.0)) for n, lb in self.peers.items()
                 if lb and lb.get("open") and n in self.view}
        if self.member:
            since[self.node] = self.since
        director = min(since, key=lambda n: (since[n], n)) if since else ""
        if director != self.director:
            self.director = director
            if director:
                self.log(Level.EVENT, SOURCE, f"elected node for ARP and unruled ports: {director}")
        if director == self.node and self.mode == "vmac_directed" and self.view != self.announced:
            # On taking over, and again at every change of members: a neighbour that
            # missed one announcement, or heard a stale answer meanwhile, is set right.
            self.announced = self.view
            self._announce(self.placements[0].mac if self.placements else b"")

    def _claims(self, g: Group, target: tuple[str, ...]) -> dict[int, str]:
        """Buckets `target` gives this node that live peers hold under their own advertised
        views, from the peers this node defers to: those it counts; not one that counts
        this node while waiting to be counted (it defers to this node meanwhile); and,
        while neither counts the other (a partition healing), the one whose name sorts
        first.  So two nodes whose views differ never both keep a bucket, and never both
        give it up.  (A peer whose view is this node's holds none of them.)"""
        out: dict[int, str] = {}
        mine = [b for b, owner in enumerate(target) if owner == self.node]
        if not mine:
            return out
        my_view = [v for v in self.view if v in g.powers]
        for n, lb in self.peers.items():
            if not lb or not lb.get("open"):
                continue
            view = [v for v in lb.get("view", ()) if v in g.powers]
            if n not in view or view == my_view:
                continue
            if n not in self.view and (self.node in view or n > self.node):
                continue
            table = buckets.assign(g.name, {v: g.powers[v] for v in view}, len(target))
            out.update((b, n) for b in mine if table[b] == n)
        return out

    def _write(self, force: bool = False) -> None:
        f = _binding()
        idx = {n: i for i, n in enumerate(self.nodes)}
        flags = {"vmac_invisible": f.F_FLOOD | f.F_ARP_ANSWER, "vmac_directed": f.F_DIRECTED}[self.mode]
        if self.mode == "vmac_directed" and self.director == self.node:
            flags |= f.F_ARP_ANSWER
        if self.config.tcpreset:
            flags |= f.F_TCPRESET
        my_mac = self.placements[0].mac if self.placements else b"\0" * 6
        answer = self.vmac if self.mode == "vmac_invisible" else my_mac
        macs = {n: bytes.fromhex(lb.get("mac") or "") for n, lb in self.peers.items() if lb}
        macs[self.node] = my_mac
        config = (idx[self.node], my_mac, self.vmac, answer, idx.get(self.director, f.NO_NODE), flags)
        nodes = tuple((i, macs.get(n, b""), len(macs.get(n, b"")) == 6) for i, n in enumerate(self.nodes))
        tables = self._rows
        state = (config, nodes, tables)
        if state == self.written and not force:
            return
        try:
            for i, mac, up in nodes:
                self.maps.set_node(i, mac if up else b"\0" * 6, up)
            for gi, owners, prevs in tables:
                if owners:
                    self.maps.set_buckets(gi, owners, prevs)
            self.maps.set_config(*config)
        except OSError as exc:
            self.log(Level.CRITICAL, SOURCE, f"cannot update the load-balancing maps: {exc.strerror}")
            return
        self.written = state
        for g in self.groups:
            table = self.owners.get(g.index, ())
            share = 100.0 * sum(o == self.node for o in table) / max(len(table), 1)
            if self.resources.set(f"vip.share.{g.name}", f"{share:.1f}"):
                self.log(Level.INFO, SOURCE, f"share of group {g.name}: {share:.1f} % of the clients")

    # -- announcements and resources
    def _announce(self, mac: bytes) -> None:
        by_link: dict[str, list[str]] = {}
        for p in self.placements:
            by_link.setdefault(p.ifname, []).append(p.addr)
        source = self.placements[0].mac if self.placements else None
        for ifname, addrs in by_link.items():
            try:
                garp.announce(ifname, mac, addrs, source)
            except OSError as exc:
                self.log(Level.INFO, SOURCE, f"gratuitous ARP on {ifname} failed: {exc.strerror}")

    async def _poll(self) -> None:
        counted = [p.addr for p, va in zip(self.placements, alias.addrs_of(self.config, True), strict=False)
                   if va.connections]
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            if self.maps is None:
                continue
            try:
                stats = self.maps.stats()
            except OSError:
                continue
            for name in ("accepted", "dropped", "local_flow", "redirected", "arp"):
                packets, nbytes = stats.get(name, (0, 0))
                self.resources.set(f"vip.packets.{name}", str(packets))
                self.resources.set(f"vip.bytes.{name}", str(nbytes))
            if counted:
                found = await asyncio.to_thread(_count_connections, counted)
                for addr, n in found.items():
                    self.resources.set(f"connections.{addr}", str(n))


def _object_path() -> Path:
    from importlib import resources as ir

    return Path(str(ir.files("hakit") / "ebpf" / "farm_lb.bpf.o"))


def _mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _place(config: Vip) -> list[alias.Placement]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        placements = alias.place(ipr, config, True)
    if not placements:
        raise HakitError("a farm needs at least one <virtual_addr> in <virtual_interface>")
    return placements


def _prepare_links(placements: list[alias.Placement], vmac: bytes | None) -> None:
    """The node's own ARP traffic must never tie a VIP to its MAC: with arp_announce=2 the
    kernel takes an ARP request's sender address from the target's subnet, not the VIP.
    In flooding mode the interface must also accept frames sent to the virtual MAC."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    for ifname in {p.ifname for p in placements}:
        Path(f"/proc/sys/net/ipv4/conf/{ifname}/arp_announce").write_text("2\n")
    if vmac is None:
        return
    with IPRoute() as ipr:
        for index in {p.index for p in placements}:
            # A NIC filtering unicast by MAC drops the virtual MAC's frames unless told;
            # virtual interfaces (veth, bridges' ports) accept everything anyway.
            with contextlib.suppress(NetlinkError):
                ipr.fdb("append", ifindex=index, lladdr=_mac(vmac), state=0x80, flags=0x02)


def _hooks_for(hook: str, indexes: set[int]) -> dict[int, str]:
    """The hook of each interface.  A veth's native XDP_TX delivers only if its peer, out
    of this node's sight, has XDP or GRO on: on veth the XDP program runs generic."""
    if hook != "xdp":
        return dict.fromkeys(indexes, hook)
    from pyroute2 import IPRoute

    out = {}
    with IPRoute() as ipr:
        for index in indexes:
            info = ipr.get_links(index)[0].get_attr("IFLA_LINKINFO")
            veth = info is not None and info.get_attr("IFLA_INFO_KIND") == "veth"
            out[index] = "xdpgeneric" if veth else hook
    return out


def _link_indexes() -> list[int]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [link["index"] for link in ipr.get_links()]


def _count_connections(addrs: list[str]) -> dict[str, int]:
    from pyroute2 import DiagSocket

    counts = dict.fromkeys(addrs, 0)
    with DiagSocket() as ds:
        ds.bind()
        for s in ds.get_sock_stats(family=socket.AF_INET, states=1 << TCP_ESTABLISHED):
            src = s.get("idiag_src") if hasattr(s, "get") else None
            if src in counts:
                counts[src] += 1
    return counts
