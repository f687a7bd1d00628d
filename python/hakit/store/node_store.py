"""The node's store: the commands log (who ran what, when, with which result)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hakit.store.db import connect
from hakit.store.retention import Pruner, Retention

SCHEMA = (
    """
    CREATE TABLE command (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        user TEXT NOT NULL,
        origin TEXT NOT NULL,     -- 'cli', a remote node's name, 'api'
        command TEXT NOT NULL,
        result INTEGER,           -- exit code; NULL while running
        duration REAL
    );
    CREATE INDEX command_at ON command (at);
    """,
)


@dataclass(frozen=True)
class Command:
    id: int
    at: float
    user: str
    origin: str
    command: str
    result: int | None
    duration: float | None


class NodeStore:
    """With a retention, commands beyond it are deleted when a command is recorded."""

    def __init__(self, path: Path, retention: Retention | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._db = connect(path, SCHEMA)
        self._pruner = Pruner(self._db, retention, ("command",), clock) if retention is not None else None

    def close(self) -> None:
        self._db.close()

    def command_started(self, user: str, origin: str, command: str) -> int:
        cur = self._db.execute(
            "INSERT INTO command (at, user, origin, command) VALUES (?, ?, ?, ?)",
            (self._clock(), user, origin, command),
        )
        assert cur.lastrowid is not None
        if self._pruner is not None:
            self._pruner.wrote()
        return cur.lastrowid

    def command_ended(self, command_id: int, result: int) -> None:
        self._db.execute(
            "UPDATE command SET result=?, duration=? - at WHERE id=?", (result, self._clock(), command_id)
        )

    def commands(self, limit: int = 200) -> list[Command]:
        rows = self._db.execute(
            "SELECT id, at, user, origin, command, result, duration FROM command ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [Command(*r) for r in reversed(rows)]
