"""One module's store: its resources with their history, and its module log."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from hakit.store.db import connect
from hakit.store.retention import Pruner, Retention

SCHEMA = (
    """
    CREATE TABLE resource (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        since REAL NOT NULL,    -- when the current value was first set
        updated REAL NOT NULL   -- when it was last assigned, changed or not
    );
    CREATE TABLE resource_history (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX resource_history_name ON resource_history (name, at);
    CREATE TABLE log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        level TEXT NOT NULL,
        source TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX log_at ON log (at);
    """,
    # Retention deletes the oldest history rows of every resource at once.
    """
    CREATE INDEX resource_history_at ON resource_history (at);
    """,
)


class Level(StrEnum):
    """Module log levels.  U/E/C/S are what an operator reads; I and D are for support."""

    USER = "U"  # an action an operator asked for
    EVENT = "E"  # a major event: state change, failover
    CRITICAL = "C"  # needs attention
    SCRIPT = "S"  # a user script ran
    INFO = "I"
    DEBUG = "D"


MAIN_LEVELS = frozenset({Level.USER, Level.EVENT, Level.CRITICAL, Level.SCRIPT})


@dataclass(frozen=True)
class Resource:
    name: str
    value: str
    since: float
    updated: float


@dataclass(frozen=True)
class LogLine:
    at: float
    level: Level
    source: str
    message: str
    id: int = 0  # increasing: where a reader following the log left off


class ModuleStore:
    """Resources and log of one module, in /var/lib/hakit/modules/AM/state.db.

    With a retention, history and log rows beyond it are deleted as this connection
    writes; the current value of every resource stays.
    """

    def __init__(self, path: Path, retention: Retention | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._db: sqlite3.Connection = connect(path, SCHEMA)
        self._pruner = (Pruner(self._db, retention, ("resource_history", "log"), clock)
                        if retention is not None else None)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ModuleStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- resources
    def set_resource(self, name: str, value: str, at: float | None = None) -> bool:
        """Assign a resource; returns True when the value changed (and history grew)."""
        now = self._clock() if at is None else at
        with _tx(self._db):
            row = self._db.execute("SELECT value FROM resource WHERE name=?", (name,)).fetchone()
            if row is not None and row[0] == value:
                self._db.execute("UPDATE resource SET updated=? WHERE name=?", (now, name))
                return False
            self._db.execute(
                "INSERT INTO resource (name, value, since, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value, since=excluded.since, "
                "updated=excluded.updated",
                (name, value, now, now),
            )
            self._db.execute(
                "INSERT INTO resource_history (name, value, at) VALUES (?, ?, ?)", (name, value, now)
            )
        self._wrote()
        return True

    def resource(self, name: str) -> Resource | None:
        row = self._db.execute(
            "SELECT name, value, since, updated FROM resource WHERE name=?", (name,)
        ).fetchone()
        return Resource(*row) if row else None

    def state(self) -> tuple[str, str] | None:
        """The module's state and status as it last recorded them; None if it never did."""
        state, status = self.resource("module.state"), self.resource("module.status")
        return (state.value, status.value) if state and status else None

    def resources(self, prefix: str = "") -> list[Resource]:
        rows = self._db.execute(
            "SELECT name, value, since, updated FROM resource WHERE name >= ? AND name < ? ORDER BY name",
            (prefix, prefix + "\U0010ffff"),
        )
        return [Resource(*r) for r in rows]

    def history(self, name: str, limit: int = 100) -> list[tuple[float, str]]:
        """Values of one resource, oldest first (at most the `limit` newest)."""
        rows = self._db.execute(
            "SELECT at, value FROM resource_history WHERE name=? ORDER BY id DESC LIMIT ?",
            (name, limit),
        ).fetchall()
        return [(at, value) for at, value in reversed(rows)]

    # -- module log
    def log(self, level: Level, source: str, message: str, at: float | None = None) -> None:
        self._db.execute(
            "INSERT INTO log (at, level, source, message) VALUES (?, ?, ?, ?)",
            (self._clock() if at is None else at, str(level), source, message),
        )
        self._wrote()

    def _wrote(self) -> None:
        if self._pruner is not None:
            self._pruner.wrote()

    def logs(self, levels: Iterable[Level] | None = None, limit: int | None = None,
             after: int = 0) -> list[LogLine]:
        """Log lines, oldest first, restricted to `levels` (all when None) and to those
        written after the line whose id is `after`."""
        sql = "SELECT at, level, source, message, id FROM log WHERE id > ?"
        params: list[object] = [after]
        if levels is not None:
            wanted = sorted(str(lv) for lv in levels)
            sql += f" AND level IN ({','.join('?' * len(wanted))})"
            params += wanted
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._db.execute(sql, params).fetchall()
        return [LogLine(at, Level(level), src, msg, i) for at, level, src, msg, i in reversed(rows)]


class _tx:
    """BEGIN IMMEDIATE ... COMMIT, so a read-modify-write is not raced by another process."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")

