"""What a module process tells its peers in every heartbeat, typed: News.

The heart (hakit.heart) carries an opaque msgpack map it never reads; this is the
module's side of it, one encoder (`to_wire`) and one decoder (`from_wire`), so that the
automaton reads fields, not a dict key by key.  The keys and value types on the wire
are the ones nodes have always sent, in the same order: the datagrams are byte for
byte those of the dict this replaces, and a node talks to one of the previous build.

Every mode sends every field (a farm's role is "new", its epochs 0); `lb` is the farm's
share, which vip/farm.py writes and reads (FarmVip.payload, FarmVip.set_peers): it is
carried here as it is, not interpreted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hakit.module.states import State, Status

E = TypeVar("E", State, Status)


@dataclass(frozen=True)
class News:
    # None when the peer has not said (its first datagrams, sent before its automaton
    # starts, carry an empty payload) or said something this build does not know.
    state: State | None = None
    status: Status | None = None
    # The copy of a mirror's data (module/datastate.py): role, generation, lineage.
    role: str = "new"
    gen: int = 0
    base: int = 0
    since: float = 0.0  # when this node became primary (time.time()): split-brain arbitration
    yielding: bool = False  # swap: this primary handed over and waits to become secondary
    swap: bool = False  # swap asked on the secondary, for the primary to hand over
    rfs_epoch: int = 0  # secondary: its hakit-rfs receivers, for the primary to synchronise
    synced: int = 0  # primary: the receivers (epoch) it synchronised last
    fullsync: bool = False  # secondary: `second fullsync` asked, until synchronised
    outdate: int = 0  # primary: the receivers (epoch) told their copy is outdated
    leaving: bool = False  # secondary: stopping its replication, it will not take over
    sync: dict[str, str] = field(default_factory=dict)  # primary: its sync_* progress keys
    lb: dict[str, Any] | None = None  # farm: this node's share (vip/farm.py); absent if none

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "state": _text(self.state), "status": _text(self.status), "role": self.role, "gen": self.gen,
            "since": self.since, "yield": self.yielding, "swap": self.swap, "rfs_epoch": self.rfs_epoch,
            "synced": self.synced, "base": self.base, "fullsync": self.fullsync, "outdate": self.outdate,
            "leaving": self.leaving, "sync": self.sync,
        }
        if self.lb is not None:
            wire["lb"] = self.lb
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> News:
        """A peer's payload, as the heart hands it over; a key it lacks takes the value a
        node without that part sends."""
        return cls(
            state=_member(State, wire.get("state")), status=_member(Status, wire.get("status")),
            role=str(wire.get("role", "new")), gen=int(wire.get("gen", 0)), base=int(wire.get("base") or 0),
            since=float(wire.get("since", 0.0)), yielding=bool(wire.get("yield")),
            swap=bool(wire.get("swap")), rfs_epoch=int(wire.get("rfs_epoch") or 0),
            synced=int(wire.get("synced") or 0), fullsync=bool(wire.get("fullsync")),
            outdate=int(wire.get("outdate") or 0), leaving=bool(wire.get("leaving")),
            sync=dict(wire.get("sync") or {}), lb=wire.get("lb"),
        )


def _text(value: State | Status | None) -> str | None:
    return None if value is None else str(value)


def _member(enum: type[E], value: Any) -> E | None:
    try:
        return enum(value)
    except (ValueError, TypeError):
        return None
