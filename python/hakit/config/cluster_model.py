"""cluster.xml: the nodes of the cluster and their addresses on each LAN."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from hakit.config.kinds import MIB, AbsPath, Choice, Duration, Host, Int, OnOff, Size, Text
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


WEB_PORT = 9453  # SafeKit's HTTPS port


@dataclass(frozen=True)
class WebLdap:
    TAG: ClassVar[str] = "ldap"
    DOC: ClassVar[str] = (
        "hakit extension: console and API users checked against an LDAP directory or Active "
        "Directory (docs/web.md, \"LDAP\"). A user's role comes from the groups the directory puts "
        "them in; local users (`hakit web user`) are tried first."
    )
    url: str = attr("Directory address: ldap://host[:port] (with starttls) or ldaps://host[:port]; "
                     "several, separated by spaces, are tried in order until one answers.",
                     Text(nonempty=True), required=True)
    starttls: bool = attr("Upgrade an ldap:// connection with StartTLS before sending a password; "
                          "off sends passwords in the clear (ldaps:// is always encrypted).", OnOff(), True)
    cafile: str = attr("CA certificates (PEM) the directory's certificate must chain to; the "
                       "system's when absent. The certificate must also name the URL's host.", AbsPath())
    base: str = attr("Where users are searched (the whole subtree), e.g. ou=people,dc=example,dc=com.",
                     Text(nonempty=True), required=True)
    filter: str = attr("Search filter of a login name; {user} is replaced by the escaped name "
                       "(Active Directory: (sAMAccountName={user})).", Text(nonempty=True), "(uid={user})")
    binddn: str = attr("DN (Active Directory: also user@domain) to search with; anonymous search when "
                       "absent.", Text())
    bindpassword: str = attr("Password of binddn. cluster.xml is kept 0600 on every node.", Text())
    admin: str = attr("DN of the group whose members are Admin.", Text())
    control: str = attr("DN of the group whose members are Control.", Text())
    monitor: str = attr("DN of the group whose members are Monitor.", Text())

    def validate(self) -> Iterator[str]:
        for url in self.url.split():
            if not re.fullmatch(r"ldaps?://[^/?#\s]+/?", url, re.IGNORECASE):
                yield f"<ldap url> {url!r} is not ldap://host[:port] or ldaps://host[:port]"
        if "{user}" not in self.filter:
            yield "<ldap filter> must contain {user}, where the login name goes"
        elif self.filter.count("(") != self.filter.count(")") or not self.filter.startswith("("):
            yield f"<ldap filter> {self.filter!r} is not an LDAP filter in parentheses"
        if bool(self.binddn) != bool(self.bindpassword):
            # A DN without a password is an unauthenticated bind, which directories treat as anonymous.
            yield "<ldap> needs both binddn and bindpassword, or neither (anonymous search)"
        if not (self.admin or self.control or self.monitor):
            yield "<ldap> names no group (admin, control or monitor): nobody could log in"


@dataclass(frozen=True)
class Web:
    TAG: ClassVar[str] = "web"
    DOC: ClassVar[str] = (
        "hakit extension: the web console and HTTP API that hakitd serves on every node "
        "(docs/web.md). Without this element: HTTPS on port 9453 with the node's cluster certificate."
    )
    port: int = attr("TCP port of the console and API.", Int(1, 65535), WEB_PORT)
    protocol: str = attr("https, or http only where a proxy in front terminates TLS.",
                         Choice(("https", "http")), "https")
    cert: str = attr("Certificate chain (PEM) to serve instead of the node's cluster certificate; "
                     "with key.", AbsPath())
    key: str = attr("Private key (PEM) of cert.", AbsPath())
    session: float = attr("A console session ends after this long without a request.",
                          Duration("mn"), 8 * 3600.0)
    metrics: str = attr("Who may read /metrics: users and tokens of any role (auth), or anyone "
                        "reaching the port (open).", Choice(("auth", "open")), "auth")
    enabled: bool = attr("Serve the console and API at all.", OnOff(), True)
    ldap: WebLdap | None = child(WebLdap)

    def validate(self) -> Iterator[str]:
        if bool(self.cert) != bool(self.key):
            yield "<web> needs both cert and key, or neither"


@dataclass(frozen=True)
class Cluster:
    TAG: ClassVar[str] = "cluster"
    DOC: ClassVar[str] = "Root of cluster.xml."
    lans: Lans = child(Lans, required=True)
    cmdlog: CmdLog | None = child(CmdLog)
    web: Web | None = child(Web)

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
