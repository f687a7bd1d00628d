"""The SQLite stores: resource history, log levels, concurrent writers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from hakit.store.module_store import Level, ModuleStore
from hakit.store.node_store import NodeStore


def test_a_value_change_is_a_history_row(tmp_path: Path):
    store = ModuleStore(tmp_path / "m.db")
    assert store.set_resource("tcp.web", "up", at=1.0)
    assert not store.set_resource("tcp.web", "up", at=2.0)
    assert store.set_resource("tcp.web", "down", at=3.0)
    assert store.set_resource("tcp.web", "up", at=4.0)
    assert store.history("tcp.web") == [(1.0, "up"), (3.0, "down"), (4.0, "up")]
    res = store.resource("tcp.web")
    assert res is not None and (res.value, res.since, res.updated) == ("up", 4.0, 4.0)
    store.set_resource("tcp.web", "up", at=5.0)
    res = store.resource("tcp.web")
    assert res is not None and (res.since, res.updated) == (4.0, 5.0)
    assert [r.name for r in store.resources("tcp.")] == ["tcp.web"]
    assert store.resources("ping.") == []


def test_log_levels_filter(tmp_path: Path):
    store = ModuleStore(tmp_path / "m.db")
    for lv in Level:
        store.log(lv, "test", f"line {lv}")
    assert [x.level for x in store.logs({Level.EVENT, Level.USER})] == [Level.USER, Level.EVENT]
    assert len(store.logs()) == len(Level)
    assert [x.message for x in store.logs(limit=1)] == ["line D"]


def _writer(path: str, n: int, tag: str) -> None:
    store = ModuleStore(Path(path))
    for i in range(n):
        store.set_resource(f"{tag}.r", str(i))
        store.log(Level.INFO, tag, str(i))


def test_processes_write_the_same_store(tmp_path: Path):
    path = tmp_path / "m.db"
    ModuleStore(path).close()
    procs = [multiprocessing.Process(target=_writer, args=(str(path), 200, f"w{k}")) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = ModuleStore(path)
    assert len(store.logs()) == 600
    assert all(len(store.history(f"w{k}.r", limit=1000)) == 200 for k in range(3))


def test_commands_log(tmp_path: Path):
    log = NodeStore(tmp_path / "node.db")
    cid = log.command_started("alice", "cli", "hakit start -m app")
    running = log.commands()[-1]
    assert running.result is None and running.user == "alice"
    log.command_ended(cid, 3)
    done = log.commands()[-1]
    assert done.result == 3 and done.duration is not None and done.duration >= 0
