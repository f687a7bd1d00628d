"""Writing a module's log: the store (for logview and the console) plus the system log."""

from __future__ import annotations

from hakit.store import syslog
from hakit.store.module_store import MAIN_LEVELS, Level, ModuleStore


class ModuleLog:
    def __init__(self, module: str, store: ModuleStore) -> None:
        self.module = module
        self.store = store

    def __call__(self, level: Level, source: str, message: str) -> None:
        self.store.log(level, source, message)
        if level in MAIN_LEVELS:
            syslog.send(str(level), self.module, message)
