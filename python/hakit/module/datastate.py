"""What a mirror node knows about the freshness of its copy of the data.

role: new (never ran here), prim (this node was primary last: its copy is the
reference), second (it was an in-sync secondary: the primary may have moved on
since), syncing (a synchronisation was interrupted: the copy is inconsistent),
outdated (it was an in-sync secondary, then the primary lost the stream to it and went
on without it: it lacks acknowledged writes).
gen grows each time a node becomes primary without an in-sync secondary (ALONE),
so of two diverging copies the one with the higher gen saw the later writes.
base: the lineage this copy equals (the primary's gen when it last synchronised
this node, or, for a primary stopped in sync, the lineage of that sync); 0 when
unknown or when the copy moved ahead (a running primary).  A primary whose journal
records from the lineage a returning secondary's base names resynchronises it
incrementally (docs/replication.md).
Written atomically on every change: after a crash it tells the truth.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from hakit.files import write_atomic

ROLES = ("new", "prim", "second", "syncing", "outdated")
NOT_A_GOOD_COPY = ("syncing", "outdated")  # only primforce makes such a copy the reference


@dataclass
class DataState:
    role: str = "new"
    gen: int = 0
    base: int = 0

    @classmethod
    def load(cls, path: Path) -> DataState:
        try:
            raw = json.loads(path.read_text())
            state = cls(str(raw["role"]), int(raw["gen"]), int(raw.get("base", 0)))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, TypeError):
            # Unreadable: treat the copy as inconsistent, only primforce can trust it.
            return cls("syncing", 0)
        return state if state.role in ROLES else cls("syncing", state.gen, state.base)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self)).encode(), 0o600)

    def prim_refusal(self) -> str | None:
        """Why `prim` must not trust this copy (primforce may), or None."""
        if self.role == "second":
            return ("this node was secondary when the module last ran: the other node may hold newer "
                    "data; start it there, or use primforce to take this copy as the reference")
        if self.role == "syncing":
            return ("a synchronisation of this node's data was interrupted: the copy is inconsistent; "
                    "start the other node, or use primforce to take this copy as the reference")
        if self.role == "outdated":
            return ("this node's copy is outdated: the primary went on without it after the replication "
                    "failed, and it lacks writes the primary acknowledged; start the other node, or use "
                    "primforce to take this copy as the reference")
        return None
