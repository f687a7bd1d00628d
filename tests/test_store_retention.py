"""Retention of the stores: a year of one-second samples leaves the age window, and the
files never outgrow their size, as the module process and each logged command write."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from hakit.config.kinds import MIB
from hakit.config.loader import load_module
from hakit.store import module_store
from hakit.store.module_store import Level, ModuleStore
from hakit.store.node_store import NodeStore
from hakit.store.retention import CHECK_EVERY, Retention
from tests.config_support import hakit, isolated_root, write  # noqa: F401 - autouse fixture

DAY = 86400.0
START = 1_700_000_000.0
BUSY_FROM = 280  # the day the module's samples start to fill its store


class Clock:
    """The stores' time, moved by the test: a year passes in seconds."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def on_disk(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def query(db: Path, sql: str) -> float:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return float(conn.execute(sql).fetchone()[0])


def oldest(db: Path, table: str) -> float:
    return query(db, f"SELECT min(at) FROM {table}")


def count(db: Path, table: str) -> int:
    return int(query(db, f"SELECT count(*) FROM {table}"))


def test_a_year_of_one_second_samples_keeps_the_window_within_the_size(tmp_path: Path):
    """Every day a burst of one-second samples of a resource that changes each time, and
    module log lines. Until October at a low rate: the age rule holds the last 30 days.
    Then a rate that fills 1 MiB in two weeks: the size rule holds, the newest rows stay."""
    db, clock, bound = tmp_path / "state.db", Clock(), 1 * MIB
    store = ModuleStore(db, Retention(30 * DAY, bound), clock)
    largest = 0
    for day in range(365):
        clock.now = START + day * DAY
        busy = day >= BUSY_FROM
        for i in range(150 if busy else 40):
            clock.now += 1.0
            store.set_resource("rfs.netout_bandwidth", f"{(day * 1000 + i) % 9973} KiB/s")
            if i % (2 if busy else 10) == 0:
                store.log(Level.INFO, "rfs", f"day {day} sample {i}: " + "synchronised " * 30)
            largest = max(largest, on_disk(db))
        assert largest <= bound, f"day {day}: {largest} bytes on disk, more than {bound}"
        if day == BUSY_FROM - 1:
            cutoff = clock.now - 30 * DAY
            # Deleted at the latest CHECK_EVERY rows (seconds here) after they expire.
            assert cutoff - CHECK_EVERY <= oldest(db, "resource_history") <= cutoff + DAY
            assert cutoff - CHECK_EVERY <= oldest(db, "log") <= cutoff + DAY
            assert count(db, "resource_history") >= 30 * 40
    assert clock.now - 20 * DAY < oldest(db, "resource_history")  # the size rule cut the window
    assert largest > bound // 2
    assert store.history("rfs.netout_bandwidth", limit=1) == [(clock.now, f"{364149 % 9973} KiB/s")]
    assert store.logs(limit=1)[0].message.startswith("day 364 sample 148:")
    current = store.resource("rfs.netout_bandwidth")
    assert current is not None and current.since == clock.now


def test_a_store_from_before_retention_shrinks_to_its_size(tmp_path: Path):
    """Written by an older hakit (no auto_vacuum, no index on the history's time) and
    grown past the size: pruned, rebuilt once, and small from then on."""
    db = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executescript(module_store.SCHEMA[0])
        conn.execute("PRAGMA user_version=1")
        conn.executemany("INSERT INTO log (at, level, source, message) VALUES (?, 'I', 'old', ?)",
                         ((START + i, "x" * 200) for i in range(20000)))
        conn.commit()
    assert on_disk(db) > 4 * MIB
    clock = Clock()
    clock.now = START + 20000
    store = ModuleStore(db, Retention(30 * DAY, 1 * MIB), clock)
    store.log(Level.EVENT, "module", "started")
    assert on_disk(db) <= 1 * MIB
    assert store.logs(limit=1)[0].message == "started"
    assert query(db, "PRAGMA auto_vacuum") == 2  # incremental


def test_a_reader_without_retention_deletes_nothing(tmp_path: Path):
    db, clock = tmp_path / "state.db", Clock()
    ModuleStore(db).log(Level.INFO, "old", "from last year", at=START - 365 * DAY)
    ModuleStore(db, clock=clock).log(Level.INFO, "hakitd", "a line")
    assert count(db, "log") == 2


def test_commands_log_keeps_its_window_within_its_size(tmp_path: Path):
    """A year of commands, one every 12 hours, each recorded by its own connection as the CLI
    does: 90 days stay. Then long command lines: the size holds."""
    db, clock = tmp_path / "node.db", Clock()
    for n in range(365 * 2):
        clock.now = START + n * 12 * 3600
        store = NodeStore(db, Retention(90 * DAY, 1 * MIB), clock)
        store.command_ended(store.command_started("root", "cli", f"hakit start -m app{n}"), 0)
        store.close()
    assert oldest(db, "command") == clock.now - 90 * DAY
    assert count(db, "command") == 90 * 2 + 1
    for n in range(700):
        clock.now += 1
        store = NodeStore(db, Retention(90 * DAY, 1 * MIB), clock)
        store.command_started("root", "cli", f"hakit -H node{n} " + "x" * 2000)
        store.close()
        assert on_disk(db) <= 1 * MIB
    assert NodeStore(db).commands(1)[0].command.startswith("hakit -H node699 ")


def test_cmdlog_of_cluster_xml_is_honoured(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Three days old: kept by default (90 days), deleted with <cmdlog age="2d">."""
    root_db = tmp_path / "root/var/lib/hakit/node.db"
    cluster = tmp_path / "root/etc/hakit/cluster.xml"
    cluster.parent.mkdir(parents=True)
    cluster.write_text(
        '<cluster>\n  <cmdlog age="2d"/>\n  <lans><lan name="default">\n'
        '    <node name="n1" addr="10.0.0.1"/>\n  </lan></lans>\n</cluster>\n'
    )
    NodeStore(root_db, clock=lambda: time.time() - 3 * DAY).command_started("root", "cli", "old")
    NodeStore(root_db, clock=lambda: time.time() - 1 * DAY).command_started("root", "cli", "recent")
    assert hakit(capsys, "cluster", "import", tmp_path / "missing.bundle").code == 1
    assert [c.command for c in NodeStore(root_db).commands()] == [
        "recent", f"hakit cluster import {tmp_path / 'missing.bundle'}"
    ]


def test_retention_of_userconfig_xml(tmp_path: Path):
    path = write(tmp_path, """\
        <safe>
          <service mode="light">
            <retention age="7" size="1G"/>
          </service>
        </safe>
        """)
    kept = load_module(path).service.retention
    assert kept is not None and (kept.age, kept.size) == (7 * DAY, 1024 * MIB)
    assert load_module(write(tmp_path, '<safe><service mode="light"/></safe>')).service.retention is None


@pytest.mark.parametrize(("attrs", "message"), [
    ('age="forever"', "'forever' is not a time value"),
    ('age="0"', "<retention age> must be longer than 0"),
    ('size="lots"', "'lots' is not a size"),
    ('size="100K"', "'100K' is less than 1M"),
])
def test_bad_retention_is_reported_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               attrs: str, message: str):
    path = write(tmp_path, f"""\
        <safe>
          <service mode="light">
            <retention {attrs}/>
          </service>
        </safe>
        """)
    run = hakit(capsys, "config", "check", path)
    assert run.code == 1
    assert len(run.err_lines) == 1 and run.err_lines[0].startswith(f"{path}:3: ")
    assert message in run.err_lines[0]
