"""Keeping a store within an age and a size on disk.

A store's log tables (each with an `at` column, indexed) lose their rows older than
the age, then their oldest rows, across tables, until the store fits its size. Only
the connection given a Retention prunes (the module process for a module store, each
logged command for the node store): the other openings are short and write a few
rows, and pruning with another's limits would cut what the owner keeps.

The size bounds the store file and its -wal together. An eighth goes to the WAL
(checkpointed and truncated past it); the file is pruned when its rows reach three
quarters, down to five eighths, so that pruning runs in batches and the rows written
between two checks still fit. Freed pages are reused by later rows, so the file stops
growing; it is shrunk only when it holds more than its share, as a store written
before retention or after the size was lowered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CHECK_EVERY = 100  # rows written between two checks...
CHECK_PERIOD = 60.0  # ...or seconds, whichever comes first
BATCH_MAX = 1000  # rows deleted per transaction
AUTO_VACUUM_INCREMENTAL = 2


@dataclass(frozen=True)
class Retention:
    max_age: float  # seconds
    max_bytes: int  # the store file and its -wal together


class Pruner:
    def __init__(self, db: sqlite3.Connection, retention: Retention, tables: Sequence[str],
                 clock: Callable[[], float]) -> None:
        self.db = db
        self.retention = retention
        self.tables = tuple(tables)
        self.clock = clock
        self.page_size = db.execute("PRAGMA page_size").fetchone()[0]
        self.wal_bytes = retention.max_bytes // 8
        # Half the WAL's share before a checkpoint: the transaction that crosses it fits too.
        db.execute(f"PRAGMA wal_autocheckpoint={max(1, self.wal_bytes // self.page_size // 2)}")
        db.execute(f"PRAGMA journal_size_limit={self.wal_bytes}")
        self.file_share = retention.max_bytes - self.wal_bytes
        self.high = retention.max_bytes * 3 // 4
        self.low = retention.max_bytes * 5 // 8
        self.written = 0
        self.checked: float | None = None

    def wrote(self) -> None:
        """One row was written; prune when enough rows or time went by (and at the first)."""
        self.written += 1
        now = self.clock()
        if (self.checked is None or self.written >= CHECK_EVERY
                or not 0 <= now - self.checked < CHECK_PERIOD):
            self.prune(now)

    def prune(self, now: float) -> None:
        self.written, self.checked = 0, now
        batch = self._batch()
        deleted = 0
        for table in self.tables:
            deleted += self._delete_oldest(table, batch, now - self.retention.max_age)
        if self._used() > self.high:
            while self._used() > self.low:
                oldest = self._oldest_table()
                if oldest is None:
                    break
                deleted += self._delete_oldest(oldest, batch, None, once=True)
        if deleted and self._pages() * self.page_size > self.file_share:
            self._shrink()

    def _batch(self) -> int:
        """Rows per deleting transaction: about a quarter of the WAL's share, so that pruning
        does not outgrow it. Ids only grow, so their span counts a table's rows cheaply."""
        rows = 0
        for table in self.tables:
            low, high = self.db.execute(f"SELECT min(id), max(id) FROM {table}").fetchone()
            rows += high - low + 1 if low is not None else 0
        per_row = max(1, self._used() // max(1, rows))
        return max(1, min(BATCH_MAX, self.wal_bytes // 4 // per_row))

    def _delete_oldest(self, table: str, batch: int, before: float | None, once: bool = False) -> int:
        where = "" if before is None else "WHERE at < ?"
        params = () if before is None else (before,)
        total = 0
        while True:
            n = self.db.execute(
                f"DELETE FROM {table} WHERE id IN "
                f"(SELECT id FROM {table} {where} ORDER BY at LIMIT {batch})", params
            ).rowcount
            total += n
            if once or n < batch:
                return total

    def _oldest_table(self) -> str | None:
        oldest: tuple[float, str] | None = None
        for table in self.tables:
            at = self.db.execute(f"SELECT min(at) FROM {table}").fetchone()[0]
            if at is not None and (oldest is None or at < oldest[0]):
                oldest = (at, table)
        return oldest[1] if oldest else None

    def _shrink(self) -> None:
        # executescript, as the pragma frees one page per step and execute() steps once.
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] == AUTO_VACUUM_INCREMENTAL:
            self.db.executescript("PRAGMA incremental_vacuum;")
        else:
            # Created before hakit set auto_vacuum: rebuilt once, incremental from then on.
            self.db.executescript(f"PRAGMA auto_vacuum={AUTO_VACUUM_INCREMENTAL}; VACUUM;")
        # The pages moved went through the WAL: give its file back too.
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _pages(self) -> int:
        return int(self.db.execute("PRAGMA page_count").fetchone()[0])

    def _used(self) -> int:
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return (self._pages() - free) * self.page_size
