"""A running module's resources: the values checkers, heartbeats and the automaton
publish, which the failover rules read.

Kept in memory for the rules (evaluated on every change) and written through to
the module store only when a value changes, so a heartbeat every 100 ms costs
nothing on disk while its LAN stays up.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from hakit.store.module_store import ModuleStore

Listener = Callable[[str, str | None, str], None]  # name, old value, new value

UNKNOWN = "unknown"  # a checker that is not running (not enabled in this state, or turned off)


class Resources:
    def __init__(self, store: ModuleStore) -> None:
        self.store = store
        self._values: dict[str, str] = {r.name: r.value for r in store.resources()}
        self._listeners: list[Listener] = []

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def set(self, name: str, value: str) -> bool:
        """Publish a value; listeners hear of it only when it changed."""
        old = self._values.get(name)
        if old == value:
            return False
        self._values[name] = value
        self.store.set_resource(name, value)
        for listener in list(self._listeners):
            listener(name, old, value)
        return True

    def matching(self, pattern: str) -> dict[str, str]:
        """Resources whose name matches a rule pattern (`?` and `*` stand for any suffix)."""
        glob = pattern.replace("?", "*")
        return {n: v for n, v in self._values.items() if fnmatch.fnmatchcase(n, glob)}

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)
