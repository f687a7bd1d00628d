"""The heartbeat payload a module sends (hakit.module.news): the same bytes as the dict
it replaced, and read back field for field."""

from __future__ import annotations

from hakit.heart.protocol import pack_payload, unpack_payload
from hakit.module.news import News
from hakit.module.states import State, Status

SHARE = {"open": True, "since": 1.7e9, "mac": "02" * 6, "view": ["n1", "n2"]}


def test_the_wire_keeps_the_keys_their_order_and_their_types():
    news = News(state=State.SECOND, status=Status.TRANSIENT, role="syncing", gen=4, base=3, since=0.0,
                yielding=False, swap=True, rfs_epoch=17, synced=0, fullsync=True, outdate=0, leaving=False,
                sync={"sync_state": "running"}, lb=SHARE)
    # The dict the automaton sent before News, key for key.
    before = {"state": "SECOND", "status": "Transient", "role": "syncing", "gen": 4, "since": 0.0,
              "yield": False, "swap": True, "rfs_epoch": 17, "synced": 0, "base": 3, "fullsync": True,
              "outdate": 0, "leaving": False, "sync": {"sync_state": "running"}, "lb": SHARE}
    assert pack_payload(news.to_wire()) == pack_payload(before)
    assert "lb" not in News(state=State.WAIT, status=Status.READY).to_wire()


def test_what_is_sent_is_read_back():
    news = News(state=State.PRIM, status=Status.READY, role="prim", gen=9, base=0, since=1.7e9,
                yielding=True, synced=12, outdate=12, leaving=True, sync={"sync_state": "done"}, lb=SHARE)
    assert News.from_wire(unpack_payload(pack_payload(news.to_wire()))) == news


def test_a_peer_that_said_nothing_yet_or_something_unknown_has_no_state():
    # A starting peer's first datagrams carry an empty payload: heard, no state yet.
    assert News.from_wire({}) == News()
    assert News.from_wire({"state": "LATER", "status": 3}).state is None
