"""userconfig.xml: one application module (SafeKit syntax, read unchanged).

Defaults marked "hakit" are hakit's own choice where SafeKit's documentation is
silent or where hakit's engine needs a different value; docs/configuration.md is
generated from these declarations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from hakit.config.kinds import (
    MIB,
    AbsPath,
    Choice,
    Duration,
    Host,
    Int,
    Netmask,
    OnOff,
    PortSpec,
    ProcRegex,
    Regex,
    Size,
    Text,
)
from hakit.config.rules import RuleSyntaxError, parse_rules
from hakit.config.schema import attr, child, later_duplicates, text

WHEN = Choice(("prim", "second", "both", "pre"))
ACTION_DOC = (
    "Action when the resource goes down: restart, stopstart, stop, wait, swap, prim "
    "(or, for errd, the name of a script in the module's bin/)."
)
_IDENT = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _ident_problems(kind: str, ident: str | None) -> Iterator[str]:
    if ident is not None and not _IDENT.match(ident):
        yield f"<{kind} ident=\"{ident}\">: use letters, digits, '_', '-' and '.' only"


# ---------------------------------------------------------------- macros, heart, farm


@dataclass(frozen=True)
class Macro:
    TAG: ClassVar[str] = "macro"
    DOC: ClassVar[str] = (
        "A named value; %NAME% is replaced by it in every attribute value and text of the file."
    )
    name: str = attr("Macro name, referenced as %name%.", Text(nonempty=True), required=True)
    value: str = attr("Replacement text.", Text(), default="")


@dataclass(frozen=True)
class Heartbeat:
    TAG: ClassVar[str] = "heartbeat"
    DOC: ClassVar[str] = "A LAN of cluster.xml on which the mirror's nodes exchange heartbeats."
    name: str = attr("LAN name from cluster.xml.", Text(nonempty=True), required=True)
    ident: str | None = attr(
        "Role of this LAN; ident=\"flow\" carries the replication flow.", Text(nonempty=True)
    )


@dataclass(frozen=True)
class Heart:
    TAG: ClassVar[str] = "heart"
    DOC: ClassVar[str] = "Heartbeats of a mirror module. A peer is lost when silent on every LAN."
    pulse: float = attr("Interval between heartbeats (hakit default, see docs/engine.md).",
                        Duration("ms"), 0.2)
    timeout: float = attr(
        "Silence after which a peer is declared lost (hakit default, see docs/engine.md).",
        Duration("ms"), 0.6
    )
    heartbeats: tuple[Heartbeat, ...] = child(Heartbeat, many=True)

    def validate(self) -> Iterator[str | tuple[Any, str]]:
        if self.timeout <= self.pulse:
            yield "<heart>: timeout must be longer than pulse"
        for heartbeat, name in later_duplicates(self.heartbeats, lambda h: h.name):
            yield heartbeat, f"<heartbeat name=\"{name}\"> is given twice"


@dataclass(frozen=True)
class FarmLan:
    TAG: ClassVar[str] = "lan"
    DOC: ClassVar[str] = "A LAN of cluster.xml whose nodes form the farm."
    name: str = attr("LAN name from cluster.xml.", Text(nonempty=True), required=True)
    console: bool = attr("Obsolete SafeKit 7 attribute.", OnOff(), ignored=True)
    command: bool = attr("Obsolete SafeKit 7 attribute.", OnOff(), ignored=True)
    framework: bool = attr("Obsolete SafeKit 7 attribute.", OnOff(), ignored=True)


@dataclass(frozen=True)
class Farm:
    TAG: ClassVar[str] = "farm"
    DOC: ClassVar[str] = "Topology of a farm module."
    lans: tuple[FarmLan, ...] = child(FarmLan, many=True, required=True)


# ---------------------------------------------------------------- virtual IP


@dataclass(frozen=True)
class VirtualAddr:
    TAG: ClassVar[str] = "virtual_addr"
    GENERATED_ACTION: ClassVar[str] = "stopstart"  # of the ip checker check="on" adds
    DOC: ClassVar[str] = "One virtual IP address."
    addr: str = attr("Virtual IP address or name.", Host(), required=True)
    where: str = attr(
        "one_side_alias: on the primary only (mirror); alias: on every UP node (farm).",
        Choice(("one_side_alias", "alias")),
        "one_side_alias",
    )
    check: bool = attr("Generate an <ip> checker that watches the address.", OnOff(), False)
    netmask: int | None = attr("Netmask; default: the interface's.", Netmask())
    connections: bool = attr(
        "Count active connections to the address in resource connections.<addr>.", OnOff(), False
    )


@dataclass(frozen=True)
class RealInterface:
    TAG: ClassVar[str] = "real_interface"
    DOC: ClassVar[str] = "Addresses set as aliases of the interface, with its own MAC (mirror)."
    addrs: tuple[VirtualAddr, ...] = child(VirtualAddr, many=True, required=True)


# The farm filter's limits (ebpf/farm_lb_consts.h; tests/test_native.py checks they agree).
FARM_MAX_GROUPS = 64
FARM_MAX_VIPS = 64
FARM_MAX_RULE_PORTS = 16384


@dataclass(frozen=True)
class VirtualInterface:
    TAG: ClassVar[str] = "virtual_interface"
    DOC: ClassVar[str] = "Addresses shared by every node of a farm, answered with a virtual MAC."
    type: str = attr(
        "vmac_directed: the VIP resolves to an elected node's MAC, which forwards the other nodes' "
        "shares (any network); vmac_invisible: it resolves to a virtual MAC never used as a source, "
        "whose frames switches flood to every node (see docs/farm.md).",
        Choice(("vmac_directed", "vmac_invisible")),
        "vmac_directed",
    )
    addr: str | None = attr("Virtual MAC address (vmac_invisible); default: 02:48: and the VIP's four bytes.",
                            Text(nonempty=True))
    hook: str = attr(
        "Where the load-balancing filter runs (hakit): tc ingress, on any interface and shared by several "
        "modules; or xdp, in the driver before the stack allocates the packet (one program per interface; "
        "generic XDP where the driver has none).",
        Choice(("tc", "xdp")),
        "tc",
    )
    addrs: tuple[VirtualAddr, ...] = child(VirtualAddr, many=True, required=True)

    def validate(self) -> Iterator[str]:
        if self.addr is not None:
            octets = self.addr.split(":")
            if len(octets) != 6 or not all(len(o) == 2 and all(c in "0123456789abcdefABCDEF" for c in o)
                                            for o in octets):
                yield f"<virtual_interface addr>: '{self.addr}' is not a MAC address (xx:xx:xx:xx:xx:xx)"
            elif int(octets[0], 16) & 1:
                yield f"<virtual_interface addr>: {self.addr} is a multicast MAC; give a unicast one"


@dataclass(frozen=True)
class Interface:
    TAG: ClassVar[str] = "interface"
    GENERATED_ACTION: ClassVar[str] = "wait"  # of the intf checker check="on" adds
    DOC: ClassVar[str] = "A network interface carrying virtual addresses."
    check: bool = attr("Watch the interface's link; a down link makes the module wait.", OnOff(), False)
    name: str | None = attr(
        "Interface name (same on every node); default: the one whose subnet holds the VIP.",
        Text(nonempty=True),
    )
    arpreroute: bool = attr("Repeat gratuitous ARP while the VIP is held.", OnOff(), False)
    real: RealInterface | None = child(RealInterface)
    virtual: VirtualInterface | None = child(VirtualInterface)

    def validate(self) -> Iterator[str]:
        if self.real is None and self.virtual is None:
            yield "<interface> needs a <real_interface> or a <virtual_interface>"


@dataclass(frozen=True)
class InterfaceList:
    TAG: ClassVar[str] = "interface_list"
    DOC: ClassVar[str] = "Interfaces with virtual addresses."
    interfaces: tuple[Interface, ...] = child(Interface, many=True, required=True)


@dataclass(frozen=True)
class LbHost:
    TAG: ClassVar[str] = "host"
    DOC: ClassVar[str] = "Relative weight of one node in a load-balancing group."
    name: str = attr("Node name from cluster.xml.", Text(nonempty=True), required=True)
    power: int = attr("Weight; a node with power 3 receives 3 times the share of power 1.", Int(0), 1)


@dataclass(frozen=True)
class LbCluster:
    TAG: ClassVar[str] = "cluster"
    DOC: ClassVar[str] = "Weights of the nodes for this group; nodes not listed have power 1."
    hosts: tuple[LbHost, ...] = child(LbHost, many=True, required=True)


@dataclass(frozen=True)
class LbRule:
    TAG: ClassVar[str] = "rule"
    DOC: ClassVar[str] = "Traffic to the VIP that this group balances."
    port: str = attr("Destination port, range a-b, or * for all.", PortSpec(), "*")
    proto: str = attr("Protocol.", Choice(("tcp", "udp")), "tcp")
    filter: str = attr(
        "on_addr: by client address (a client stays on one node); on_port: by client address "
        "and port; on_ipid: by IP identification (UDP, spreads one client).",
        Choice(("on_addr", "on_port", "on_ipid")),
        "on_addr",
    )
    virtual_addr: str = attr("VIP the rule applies to; * for every VIP of the module.", Text(), "*")

    def validate(self) -> Iterator[str]:
        if self.filter == "on_ipid" and self.proto != "udp":
            yield "<rule filter=\"on_ipid\"> applies to proto=\"udp\" only"


@dataclass(frozen=True)
class LbGroup:
    TAG: ClassVar[str] = "group"
    DOC: ClassVar[str] = "A set of rules sharing one distribution of the clients over the nodes."
    name: str = attr("Group name; resource vip.share.<name> holds this node's share (percent).",
                     Text(nonempty=True), required=True)
    cluster: LbCluster | None = child(LbCluster)
    rules: tuple[LbRule, ...] = child(LbRule, many=True, required=True)


@dataclass(frozen=True)
class LoadBalancingList:
    TAG: ClassVar[str] = "loadbalancing_list"
    DOC: ClassVar[str] = "Load-balancing groups of a farm VIP."
    groups: tuple[LbGroup, ...] = child(LbGroup, many=True, required=True)


@dataclass(frozen=True)
class Vip:
    TAG: ClassVar[str] = "vip"
    DOC: ClassVar[str] = "Virtual IP addresses of the module."
    tcpreset: bool = attr("Reset unknown TCP flows of buckets that no live node held before, instead of "
                          "dropping them (docs/farm.md).", OnOff(), False)
    scriptcontrol: bool = attr(
        "Scripts open and close this node's share (hakit vip open|close) instead of the module.",
        OnOff(),
        False,
    )
    interfaces: InterfaceList = child(InterfaceList, required=True)
    loadbalancing: LoadBalancingList | None = child(LoadBalancingList)

    @property
    def addrs(self) -> list[VirtualAddr]:
        out: list[VirtualAddr] = []
        for itf in self.interfaces.interfaces if self.interfaces else ():
            for holder in (itf.real, itf.virtual):
                if holder is not None:
                    out.extend(holder.addrs)
        return out

    def validate(self) -> Iterator[str | tuple[Any, str]]:
        # (an element missing a required child is reported as such; its validate still runs)
        itfs = self.interfaces.interfaces if self.interfaces is not None else ()
        shared = [itf.virtual for itf in itfs if itf.virtual is not None]
        for what in ("type", "hook"):
            for vi in shared[1:]:
                if getattr(vi, what) != getattr(shared[0], what):
                    yield vi, (f"the farm's <virtual_interface> elements must all have the same {what} "
                               f"({getattr(shared[0], what)} here, {getattr(vi, what)} there)")
        vips = [a.addr for vi in shared for a in vi.addrs or ()]
        groups = (self.loadbalancing.groups or ()) if self.loadbalancing else ()
        if len(groups) > FARM_MAX_GROUPS or len(vips) > FARM_MAX_VIPS:
            yield f"a farm has at most {FARM_MAX_GROUPS} groups and {FARM_MAX_VIPS} virtual IPs"
        # (vip, proto) -> port intervals, as the filter's rule map will hold them
        spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for g in groups:
            for r in g.rules or ():
                if r.virtual_addr not in ("*", "") and r.virtual_addr not in vips:
                    yield r, (f"<rule virtual_addr=\"{r.virtual_addr}\"> of group {g.name} "
                              "is not a VIP of the module")
                lo, _, hi = r.port.partition("-")
                span = (0, 0) if r.port == "*" else (int(lo), int(hi or lo))
                for vip in vips if r.virtual_addr in ("*", "") else [r.virtual_addr]:
                    spans.setdefault((vip, r.proto), []).append(span)
        if _covered(spans) > FARM_MAX_RULE_PORTS:
            yield (f"the load-balancing rules cover more than {FARM_MAX_RULE_PORTS} ports: "
                   "use port=\"*\" or fewer ranges")


def _covered(spans: dict[tuple[str, str], list[tuple[int, int]]]) -> int:
    """Entries of the filter's rule map: every (vip, port, proto) the rules name once."""
    total = 0
    for intervals in spans.values():
        end = -1
        for lo, hi in sorted(intervals):
            if hi > end:
                total += hi - max(lo, end + 1) + 1
                end = hi
    return total


# ---------------------------------------------------------------- replication


@dataclass(frozen=True)
class NotReplicated:
    TAG: ClassVar[str] = "notreplicated"
    DOC: ClassVar[str] = "Entries left out of replication (or, with regexpath=\"!…\", the only ones kept)."
    path: str | None = attr("Path relative to the replicated directory.", Text(nonempty=True))
    regexpath: str | None = attr(
        "Regular expression on paths under the directory; a leading ! means replicate only matches.",
        Regex(),
    )

    def validate(self) -> Iterator[str]:
        if (self.path is None) == (self.regexpath is None):
            yield "<notreplicated> needs exactly one of path or regexpath"
        elif self.path is not None and self.path.startswith("/"):
            yield "<notreplicated path> is relative to the replicated directory"


@dataclass(frozen=True)
class Replicated:
    TAG: ClassVar[str] = "replicated"
    DOC: ClassVar[str] = "A directory replicated from the primary to the secondary."
    dir: str = attr("Absolute path of the directory (same path on both nodes).", AbsPath(), required=True)
    mode: str | None = attr("Obsolete SafeKit attribute.", Text(), ignored=True)
    excluded: tuple[NotReplicated, ...] = child(NotReplicated, many=True)

    def validate(self) -> Iterator[str]:
        if self.dir == "/":
            yield "<replicated dir=\"/\">: a file system root cannot be replicated"


# What a write(2) on the primary waits for (<rfs writes>).  Buffered by default: applied costs a
# database a large share of its transactions for no loss that fsync does not already cover
# (docs/replication.md, the durability contract, with the figures).
WRITE_POLICIES = ("applied", "buffered")
DEFAULT_WRITE_POLICY = "buffered"


@dataclass(frozen=True)
class Rfs:
    TAG: ClassVar[str] = "rfs"
    DOC: ClassVar[str] = "Real-time replication of directories (mirror modules)."
    acl: bool = attr("Replicate ACLs and extended attributes.", OnOff(), False)
    nbremconn: int = attr("Parallel TCP connections to the secondary.", Int(1, 16), 1)
    sendtimeout: float = attr("Time to wait for the secondary to accept data.", Duration("s"), 30.0)
    allocthreshold: int = attr("Size in GB from which new files are preallocated on full sync.",
                               Int(0), 0)
    namespacepolicy: int = attr("Namespace resynchronisation policy (SafeKit compatible).", Int(0, 4), 4)
    scripts: bool = attr("Run the module's start_rfs before the replication starts and stop_rfs "
                         "after it stops, on both nodes.", OnOff(), False)
    nbrei: int = attr("Threads synchronising files in a full or incremental synchronisation.",
                      Int(1, 16), 3)
    reidbwidthpercent: int = attr(
        "While the application writes, the synchronisation sends at most this percentage of the "
        "data sent to the secondary (100: no cap; with no application write for 1 s, none).",
        Int(1, 100), 100)
    reiallowedbw: int = attr("Most a synchronisation sends, in KiB/s (0: no limit).", Int(0), 0)
    reitimeout: str = attr("SafeKit reintegration timeout.", Text(), ignored=True)
    reicommit: str = attr("SafeKit reintegration commit interval.", Text(), ignored=True)
    ruzone_blocksize: str = attr("SafeKit bitmap zone size (hakit-rfs tracks 4 KiB blocks).",
                                 Text(), ignored=True)
    conntimeout: str = attr("SafeKit connection timeout.", Text(), ignored=True)
    iotimeout: str = attr("SafeKit I/O timeout (sendtimeout applies).", Text(), ignored=True)
    locktimeout: str = attr("SafeKit lock timeout.", Text(), ignored=True)
    syncdelay: str = attr("SafeKit periodic sync delay.", Text(), ignored=True)
    syncat: str = attr("SafeKit scheduled synchronisation.", Text(), ignored=True)
    checktime: str = attr("SafeKit replication check timeout.", Text(), ignored=True)
    checkintv: str = attr("SafeKit replication check interval.", Text(), ignored=True)
    roflags: str = attr("SafeKit read-only mount flags.", Text(), ignored=True)
    writes: str | None = attr(
        "hakit: applied: every write(2) returns once the secondary applied it; buffered: writes "
        "reach the secondary within 100 ms, fsync and close wait for it (docs/replication.md). "
        "Default: async's choice, else buffered.",
        Choice(WRITE_POLICIES),
    )
    async_: str | None = attr(
        "SafeKit's replication mode, used when writes is absent: none means writes=\"applied\", "
        "second means writes=\"buffered\".",
        Choice(("none", "second")),
        xml="async",
    )
    replicated: tuple[Replicated, ...] = child(Replicated, many=True, required=True)

    @property
    def write_policy(self) -> str:
        """What a write(2) on the primary waits for: "applied" or "buffered"."""
        if self.writes is not None:
            return self.writes
        return "applied" if self.async_ == "none" else DEFAULT_WRITE_POLICY

    def validate(self) -> Iterator[str]:
        dirs = [r.dir for r in self.replicated]
        for a in dirs:
            for b in dirs:
                if a != b and b.startswith(a + "/"):
                    yield f"replicated directories overlap: {b} is inside {a}"


# ---------------------------------------------------------------- scripts, vhost


@dataclass(frozen=True)
class Var:
    TAG: ClassVar[str] = "var"
    DOC: ClassVar[str] = "An environment variable given to every module script."
    name: str = attr("Variable name.", Text(nonempty=True), required=True)
    value: str = attr("Value (macros expanded).", Text(), "")

    def validate(self) -> Iterator[str]:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            yield f"<var name=\"{self.name}\"> is not a valid environment variable name"


@dataclass(frozen=True)
class User:
    TAG: ClassVar[str] = "user"
    DOC: ClassVar[str] = "Module scripts. Without <user>, no script runs."
    nicestoptimeout: float = attr("Time limit of a stop script.", Duration("s"), 300.0)
    forcestoptimeout: float = attr("Time limit of a stop script run with 'force'.", Duration("s"), 300.0)
    starttimeout: float = attr("Time limit of the other scripts (hakit).", Duration("s"), 300.0)
    logging: str = attr(
        "userlog: each script run's output goes to its own userlog file; none: discarded.",
        Choice(("userlog", "none")),
        "userlog",
    )
    userlogsize: int = attr("Kilobytes of script logs kept per module; older runs are deleted.",
                            Int(1), 2048)
    vars: tuple[Var, ...] = child(Var, many=True)


@dataclass(frozen=True)
class VirtualHostName:
    TAG: ClassVar[str] = "virtualhostname"
    DOC: ClassVar[str] = "A host name the application sees instead of the node's."
    name: str = attr("Virtual host name.", Text(nonempty=True), required=True)
    envfile: str = attr("File where the environment for the application is written.", AbsPath(),
                        required=True)
    when: str = attr("Where it applies.", Choice(("prim", "second", "both")), "prim")


@dataclass(frozen=True)
class Vhost:
    TAG: ClassVar[str] = "vhost"
    DOC: ClassVar[str] = "Virtual host names."
    names: tuple[VirtualHostName, ...] = child(VirtualHostName, many=True, required=True)


@dataclass(frozen=True)
class StoreRetention:
    TAG: ClassVar[str] = "retention"
    DOC: ClassVar[str] = (
        "hakit extension: how much resource history and module log this node keeps for the module "
        "(in /var/lib/hakit/modules/AM/state.db). The current value of every resource is always kept."
    )
    age: float = attr("History and log lines older than this are deleted.", Duration("d"), 30 * 86400.0)
    size: int = attr(
        "Most the store takes on disk, with its -wal file; past it, the oldest history and log "
        "lines are deleted first.", Size(least=MIB), 64 * MIB
    )

    def validate(self) -> Iterator[str]:
        if self.age <= 0:
            yield "<retention age> must be longer than 0"


# ---------------------------------------------------------------- process monitoring


@dataclass(frozen=True)
class Proc:
    TAG: ClassVar[str] = "proc"
    DOC: ClassVar[str] = "A process (or systemd service) that must be running."
    name: str = attr("Process name (comm), or the systemd unit with service=\"on\".", Text(nonempty=True),
                     required=True)
    service: bool = attr("name is a systemd service rather than a process.", OnOff(), False)
    atleast: int = attr("Fewest instances allowed.", Int(0), 1)
    atmost: int = attr("Most instances allowed; -1 for no limit.", Int(-1), -1)
    action: str = attr(ACTION_DOC, Text(nonempty=True), "restart")
    klass: str = attr(
        "When monitoring runs: prim, second, both, pre, or a custom class enabled by "
        "'hakit errd enable CLASS'.",
        Text(nonempty=True),
        "prim",
        xml="class",
    )
    nameregex: str | None = attr("Match process names with this regular expression.", ProcRegex())
    argregex: str | None = attr("Match the command line with this regular expression (its first "
                                "64 KiB).", ProcRegex())
    user: str | None = attr(
        "hakit extension: count only processes of this user (name or uid), so that another user's "
        "process of the same name neither hides the application's death nor pushes the count over "
        "atmost.", Text(nonempty=True))

    def validate(self) -> Iterator[str]:
        if self.atmost >= 0 and self.atmost < self.atleast:
            yield f"<proc name=\"{self.name}\">: atmost ({self.atmost}) is below atleast ({self.atleast})"


@dataclass(frozen=True)
class Errd:
    TAG: ClassVar[str] = "errd"
    DOC: ClassVar[str] = "Process and service monitoring (deaths seen as they happen, no polling)."
    polltimer: float = attr("SafeKit's polling period; hakit is event driven and ignores it.",
                            Duration("s"), 10.0, ignored=True)
    procs: tuple[Proc, ...] = child(Proc, many=True, required=True)


# ---------------------------------------------------------------- checkers


@dataclass(frozen=True)
class AddrTo:
    TAG: ClassVar[str] = "to"
    DOC: ClassVar[str] = "What the checker tests."
    addr: str = attr("Address or host name.", Host(), required=True)
    port: int | None = attr("TCP port (tcp checker).", Int(1, 65535))
    interval: float = attr("Time between tests.", Duration("s"), 10.0)
    timeout: float = attr("Time allowed for one test.", Duration("s"), 5.0)


@dataclass(frozen=True)
class IntfTo:
    TAG: ClassVar[str] = "to"
    DOC: ClassVar[str] = "The interface watched."
    name: str = attr("Interface name.", Text(nonempty=True), required=True)


@dataclass(frozen=True)
class TcpChecker:
    TAG: ClassVar[str] = "tcp"
    RESOURCE: ClassVar[str] = "tcp"  # tcp.<ident>
    RULE_PREFIX: ClassVar[str] = "t_"  # the generated rule t_<ident>
    DEFAULT_WHEN: ClassVar[tuple[str, str]] = ("prim", "both")  # (mirror and light, farm)
    DOC: ClassVar[str] = "Connects to a TCP service; resource tcp.<ident>, rule t_<ident>."
    ident: str = attr("Checker name.", Text(nonempty=True), required=True)
    when: str | None = attr("prim, second, both or pre; default prim (mirror) or both (farm).", WHEN)
    action: str = attr(ACTION_DOC, Text(nonempty=True), "restart")
    to: AddrTo = child(AddrTo, required=True)

    def validate(self) -> Iterator[str]:
        yield from _ident_problems("tcp", self.ident)
        if self.to is not None and self.to.port is None:
            yield f"<tcp ident=\"{self.ident}\"><to> needs a port"


@dataclass(frozen=True)
class PingChecker:
    TAG: ClassVar[str] = "ping"
    RESOURCE: ClassVar[str] = "ping"  # ping.<ident>
    RULE_PREFIX: ClassVar[str] = "p_"  # the generated rule p_<ident>
    DEFAULT_WHEN: ClassVar[tuple[str, str]] = ("pre", "pre")  # (mirror and light, farm)
    DOC: ClassVar[str] = "Pings an address; resource ping.<ident>, rule p_<ident>."
    ident: str = attr("Checker name.", Text(nonempty=True), required=True)
    when: str | None = attr("prim, second, both or pre; default pre.", WHEN)
    action: str = attr(ACTION_DOC, Text(nonempty=True), "wait")
    to: AddrTo = child(AddrTo, required=True)

    def validate(self) -> Iterator[str]:
        yield from _ident_problems("ping", self.ident)


@dataclass(frozen=True)
class IntfChecker:
    TAG: ClassVar[str] = "intf"
    RESOURCE: ClassVar[str] = "intf"  # intf.<ident>
    RULE_PREFIX: ClassVar[str] = "i_"  # the generated rule i_<ident>
    DEFAULT_WHEN: ClassVar[tuple[str, str]] = ("pre", "pre")  # (mirror and light, farm)
    DOC: ClassVar[str] = "Watches a network link (netlink events); resource intf.<ident>, rule i_<ident>."
    ident: str = attr("Checker name.", Text(nonempty=True), required=True)
    when: str | None = attr("prim, second, both or pre; default pre.", WHEN)
    action: str = attr(ACTION_DOC, Text(nonempty=True), "wait")
    to: IntfTo = child(IntfTo, required=True)

    def validate(self) -> Iterator[str]:
        yield from _ident_problems("intf", self.ident)


@dataclass(frozen=True)
class IpChecker:
    TAG: ClassVar[str] = "ip"
    RESOURCE: ClassVar[str] = "ip"  # ip.<ident>
    RULE_PREFIX: ClassVar[str] = "ip_"  # the generated rule ip_<ident>
    DEFAULT_WHEN: ClassVar[tuple[str, str]] = ("prim", "both")  # (mirror and light, farm)
    DOC: ClassVar[str] = "Checks an address is configured locally; resource ip.<ident>, rule ip_<ident>."
    ident: str = attr("Checker name.", Text(nonempty=True), required=True)
    when: str | None = attr("prim or both; default prim (mirror) or both (farm).",
                            Choice(("prim", "both")))
    action: str = attr(ACTION_DOC, Text(nonempty=True), "stopstart")
    to: AddrTo = child(AddrTo, required=True)

    def validate(self) -> Iterator[str]:
        yield from _ident_problems("ip", self.ident)


@dataclass(frozen=True)
class CustomChecker:
    TAG: ClassVar[str] = "custom"
    RESOURCE: ClassVar[str] = "custom"  # custom.<ident>
    RULE_PREFIX: ClassVar[str] = "c_"  # the generated rule c_<ident>
    DEFAULT_WHEN: ClassVar[tuple[str, str]] = ("prim", "both")  # (mirror and light, farm)
    DOC: ClassVar[str] = (
        "Runs a long-lived checker program from the module's bin/ that sets custom.<ident> "
        "with 'hakit set -r custom.<ident> -v up|down'; rule c_<ident>."
    )
    ident: str = attr("Checker name.", Text(nonempty=True), required=True)
    exec: str = attr("Program in the module's bin/ (or absolute path).", Text(nonempty=True),
                     required=True)
    arg: str = attr("Arguments, split like a shell would.", Text(), "")
    when: str | None = attr("prim, second, both or pre; default prim (mirror) or both (farm).", WHEN)
    action: str | None = attr(
        ACTION_DOC + " Without action, write the rule in <failover> yourself.", Text(nonempty=True)
    )

    def validate(self) -> Iterator[str]:
        yield from _ident_problems("custom", self.ident)


@dataclass(frozen=True)
class ModuleTo:
    TAG: ClassVar[str] = "to"
    DOC: ClassVar[str] = "Node whose module is watched (default: this node)."
    addr: str = attr("Node address.", Host(), "127.0.0.1")
    port: int = attr("hakitd API port on that node.", Int(1, 65535), 9010)


@dataclass(frozen=True)
class ModuleChecker:
    TAG: ClassVar[str] = "module"
    RESOURCE: ClassVar[str] = "module"  # module.<ident>
    RULE_PREFIX: ClassVar[str] = "m_"  # the generated rule m_<ident>
    DEFAULT_WHEN: ClassVar[tuple[str, str]] = ("pre", "pre")  # (mirror and light, farm)
    DOC: ClassVar[str] = "Depends on another module being up; resource module.<ident>, rule m_<ident>."
    name: str = attr("Name of the module depended upon.", Text(nonempty=True), required=True)
    ident: str | None = attr("Checker name; default: the module name.", Text(nonempty=True))
    when: str | None = attr("prim, second, both or pre; default pre.", WHEN)
    action: str = attr(ACTION_DOC, Text(nonempty=True), "wait")
    to: ModuleTo | None = child(ModuleTo)

    def validate(self) -> Iterator[str]:
        yield from _ident_problems("module", self.ident or self.name)


# The checkers that own a resource and generate a rule.
CHECKERS = (TcpChecker, PingChecker, IntfChecker, IpChecker, CustomChecker, ModuleChecker)


@dataclass(frozen=True)
class SplitbrainChecker:
    TAG: ClassVar[str] = "splitbrain"
    DOC: ClassVar[str] = (
        "Witness consulted only when every heartbeat is lost: the node that cannot reach it goes WAIT."
    )
    ident: str = attr("Checker name.", Text(nonempty=True), "witness")
    exec: str = attr("Program that tests the witness (ping, or a program in bin/).", Text(nonempty=True),
                     "ping")
    arg: str = attr("Witness address (or arguments of exec).", Text(nonempty=True), required=True)


@dataclass(frozen=True)
class Check:
    TAG: ClassVar[str] = "check"
    DOC: ClassVar[str] = "Checkers of the module."
    tcp: tuple[TcpChecker, ...] = child(TcpChecker, many=True)
    ping: tuple[PingChecker, ...] = child(PingChecker, many=True)
    intf: tuple[IntfChecker, ...] = child(IntfChecker, many=True)
    ip: tuple[IpChecker, ...] = child(IpChecker, many=True)
    custom: tuple[CustomChecker, ...] = child(CustomChecker, many=True)
    module: tuple[ModuleChecker, ...] = child(ModuleChecker, many=True)
    splitbrain: SplitbrainChecker | None = child(SplitbrainChecker)

    def validate(self) -> Iterator[str]:
        for prefix, items in (("tcp", self.tcp), ("ping", self.ping), ("intf", self.intf),
                              ("ip", self.ip), ("custom", self.custom)):
            idents = [c.ident for c in items]
            for dup in sorted({i for i in idents if idents.count(i) > 1}):
                yield f"two <{prefix}> checkers share ident \"{dup}\""


@dataclass(frozen=True)
class Failover:
    TAG: ClassVar[str] = "failover"
    DOC: ClassVar[str] = (
        "Failover rules, one per statement: 'label: if (expression) then action();'. "
        "Rules for checkers' action= attributes are generated and need not be written."
    )
    rules: str = text("Rule text, usually inside <![CDATA[ ... ]]>.")

    def validate(self) -> Iterator[tuple[int, str]]:
        try:
            parse_rules(self.rules)
        except RuleSyntaxError as exc:
            yield exc.line - 1, f"failover rule: {exc}"


# ---------------------------------------------------------------- the module


@dataclass(frozen=True)
class Service:
    TAG: ClassVar[str] = "service"
    DOC: ClassVar[str] = "The module: its kind and everything it runs."
    mode: str = attr("mirror (2 nodes, replication), farm (N nodes, load balancing), light (1 node).",
                     Choice(("mirror", "farm", "light")), required=True)
    boot: str = attr(
        "Start at boot: on, off, auto (if it ran before the reboot), ignore (leave it to "
        "'hakit boot -m AM on|off').",
        Choice(("on", "off", "auto", "ignore")),
        "ignore",
    )
    boot_delay: float = attr("Delay before the start at boot.", Duration("s"), 0.0)
    maxloop: int = attr("Automatic restarts allowed within loop_interval; one more stops the module.",
                        Int(0), 3)
    loop_interval: float = attr("Window over which maxloop counts.", Duration("h"), 24 * 3600.0)
    defaultprim: str | None = attr(
        "Node that takes PRIM back automatically after reintegration (mirror).", Text(nonempty=True)
    )
    automatic_reboot: bool = attr("Reboot the node when a stop fails (hakit: not done, logged).",
                                  OnOff(), False, ignored=True)
    heart: Heart | None = child(Heart)
    farm: Farm | None = child(Farm)
    vip: Vip | None = child(Vip)
    rfs: Rfs | None = child(Rfs)
    user: User | None = child(User)
    vhost: Vhost | None = child(Vhost)
    errd: Errd | None = child(Errd)
    checks: Check | None = child(Check)
    failover: Failover | None = child(Failover)
    retention: StoreRetention | None = child(StoreRetention)

    def validate(self) -> Iterator[str]:
        if self.mode == "farm":
            if self.farm is None:
                yield "a farm module needs <farm><lan name=\"…\"/></farm>"
            if self.rfs is not None:
                yield "<rfs> replication is for mirror modules only (mode=\"mirror\")"
            if self.heart is not None:
                yield "a farm module's nodes are given by <farm><lan>, not <heart>"
        if self.mode != "farm" and self.farm is not None:
            yield f"<farm> applies to farm modules only, this one is mode=\"{self.mode}\""
        if self.mode == "light" and (self.heart is not None or self.rfs is not None):
            yield "a light module runs on one node: no <heart> or <rfs>"
        if self.vip is not None:
            for itf in self.vip.interfaces.interfaces if self.vip.interfaces else ():
                for a in itf.virtual.addrs if itf.virtual else ():
                    if a.where != "alias":
                        yield f"<virtual_interface> address {a.addr} must use where=\"alias\""
                if itf.virtual is not None and self.mode != "farm":
                    yield "<virtual_interface> (shared VIP) is for farm modules"
                if itf.real is not None and self.mode == "farm":
                    yield "a farm VIP goes in <virtual_interface>, not <real_interface>"
            if self.vip.loadbalancing is not None and self.mode != "farm":
                yield "<loadbalancing_list> is for farm modules"


@dataclass(frozen=True)
class Safe:
    TAG: ClassVar[str] = "safe"
    DOC: ClassVar[str] = "Root of userconfig.xml."
    macros: tuple[Macro, ...] = child(Macro, many=True)
    service: Service = child(Service, required=True)


@dataclass(frozen=True)
class ModuleConfig:
    """A read userconfig.xml: the module plus the macros it was expanded with."""

    service: Service
    macros: dict[str, str]
