"""SQLite connections as hakit uses them: WAL, a busy timeout, a versioned schema.

Several processes of a node (hakitd, module processes, scripts calling
`hakit printi`, the CLI) open the same files; WAL lets readers run beside the one
writer and the busy timeout absorbs the short write locks.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

BUSY_TIMEOUT_S = 10.0


def connect(path: Path, schema: Sequence[str]) -> sqlite3.Connection:
    """Open (creating if needed) a store and bring its schema to the latest version.

    `schema[i]` is the SQL script that takes the store from version i to i+1, so a
    store written by an older hakit is upgraded in place and never rebuilt.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0600 before SQLite opens it (its -wal and -shm files take the store's mode); a
    # store from an older hakit is made private too.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with contextlib.suppress(PermissionError):  # another user's store: read as it is
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    # Only takes effect on a new store, before its first table: pages that pruning frees
    # can then be given back to the file system (store/retention.py).
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across process crashes in WAL mode; only a power loss may
    # drop the last transactions, which for logs and resource values is acceptable.
    conn.execute("PRAGMA synchronous=NORMAL")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for step in range(version, len(schema)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if conn.execute("PRAGMA user_version").fetchone()[0] == step:
                for stmt in _statements(schema[step]):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return conn


def _statements(script: str) -> list[str]:
    """Split a script into statements; executescript() would commit our transaction."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf)
            buf = ""
    if buf.strip():
        out.append(buf)
    return out
