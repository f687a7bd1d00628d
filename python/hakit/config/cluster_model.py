"""cluster.xml: the nodes of the cluster and their addresses on each LAN."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from hakit.config.kinds import MIB, Duration, Host, OnOff, Size, Text
from hakit.config.schema import attr, child, later_duplicates


@dataclass(frozen=True)
class ClusterNode:
    TAG: ClassVar[str] = "node"
    DOC: ClassVar[str] = "A node's address on this LAN."
    name: str = attr("Node name, the same on every LAN and in module configurations.",
                     Text(nonempty=True), required=True)
    addr: str = attr("IP address (or DNS name) of the node on this LAN.", Host(), required=True)


@dataclass(frozen=True)
class Lan:
    TAG: ClassVar[str] = "lan"
    DOC: ClassVar[str] = (
        "A network carrying cluster traffic. Modules name it in <heartbeat name> (mirror) "
        "or <farm><lan name> (farm)."
    )
    name: str = attr("Logical LAN name.", Text(nonempty=True), required=True)
    console: bool = attr("Obsolete SafeKit 7 attribute.", OnOff(), ignored=True)
    connect: bool = attr("Obsolete SafeKit attribute.", OnOff(), ignored=True)
    framework: bool = attr("Obsolete SafeKit 7 attribute.", OnOff(), ignored=True)
    command: bool = attr("Obsolete SafeKit 7 attribute.", OnOff(), ignored=True)
    nodes: tuple[ClusterNode, ...] = child(ClusterNode, many=True, required=True)

    def validate(self) -> Iterator[tuple[Any, str]]:
        for node, name in later_duplicates(self.nodes, lambda n: n.name):
            yield node, f"node '{name}' appears twice in <lan name=\"{self.name}\">"
        for node, addr in later_duplicates(self.nodes, lambda n: n.addr):
            yield node, f"address {addr} is given to two nodes in <lan name=\"{self.name}\">"


@dataclass(frozen=True)
class Lans:
    TAG: ClassVar[str] = "lans"
    DOC: ClassVar[str] = "The cluster's networks."
    lans: tuple[Lan, ...] = child(Lan, many=True, required=True)


@dataclass(frozen=True)
class CmdLog:
    TAG: ClassVar[str] = "cmdlog"
    DOC: ClassVar[str] = (
        "hakit extension: how much of its commands log (`hakit cmdlog`, in /var/lib/hakit/node.db) "
        "each node keeps."
    )
    age: float = attr("Commands older than this are deleted.", Duration("d"), 90 * 86400.0)
    size: int = attr("Most the commands log takes on disk, with its -wal file; past it, the oldest "
                     "commands are deleted first.", Size(least=MIB), 16 * MIB)

    def validate(self) -> Iterator[str]:
        if self.age <= 0:
            yield "<cmdlog age> must be longer than 0"


@dataclass(frozen=True)
class Cluster:
    TAG: ClassVar[str] = "cluster"
    DOC: ClassVar[str] = "Root of cluster.xml."
    lans: Lans = child(Lans, required=True)
    cmdlog: CmdLog | None = child(CmdLog)

    @property
    def lan_list(self) -> tuple[Lan, ...]:
        return self.lans.lans if self.lans else ()

    @property
    def node_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for lan in self.lan_list:
            for node in lan.nodes:
                seen.setdefault(node.name, None)
        return list(seen)

    def lan(self, name: str) -> Lan | None:
        return next((lan for lan in self.lan_list if lan.name == name), None)

    def addr(self, node: str, lan: str) -> str | None:
        found = self.lan(lan)
        if found is None:
            return None
        return next((n.addr for n in found.nodes if n.name == node), None)

    def validate(self) -> Iterator[str | tuple[Any, str]]:
        for lan, name in later_duplicates(self.lan_list, lambda lan: lan.name):
            yield lan, f"LAN '{name}' is defined twice"
        everyone = set(self.node_names)
        if self.lan_list and not any({n.name for n in lan.nodes} == everyone for lan in self.lan_list):
            yield "no LAN connects every node: at least one <lan> must list all nodes"
