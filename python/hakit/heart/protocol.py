"""Heartbeat datagrams: msgpack, authenticated with the module key.

    "hk" | version | msgpack([module, sender, incarnation, seq, nonce, echo, payload])
         | HMAC-SHA256[:16]

The tag covers everything before it.  Freshness (docs/engine.md, "Heartbeats"):
`incarnation` numbers the sender's module processes (a counter kept on its disk, so
it only grows, whatever the clocks do) and `seq` grows with every datagram; `nonce`
is the sender's challenge, random for the life of its process, and `echo` the
receiver's challenge as the sender last heard it.  A receiver takes a beat only if
it echoes its own current challenge and is newer than the last it took: a beat
recorded earlier is refused, even by a receiver that restarted since.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import msgpack

MAGIC = b"hk"
VERSION = 2
TAG_LEN = 16
NONCE_LEN = 16
MAX_DATAGRAM = 1400  # one Ethernet frame: a heartbeat never fragments


class Rejected(ValueError):
    """A datagram that is not a valid heartbeat of this module (the reason says why)."""


@dataclass(frozen=True)
class Beat:
    module: str
    sender: str
    incarnation: int
    seq: int
    nonce: bytes
    echo: bytes  # b"" until the sender has heard the receiver
    payload: dict[str, Any]


def _tag(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")[:TAG_LEN]


def pack_payload(payload: dict[str, Any]) -> bytes:
    """The payload's part of a datagram, packed once for every datagram that carries it."""
    return msgpack.packb(payload, use_bin_type=True)


def encode_packed(key: bytes, beat: Beat, payload: bytes) -> bytes:
    """encode(), with the payload packed already (pack_payload(beat.payload)): a node
    sends the same payload to every peer, each datagram with its own echo."""
    packer = msgpack.Packer(use_bin_type=True)
    head = packer.pack_array_header(7) + b"".join(
        packer.pack(f) for f in (beat.module, beat.sender, beat.incarnation, beat.seq, beat.nonce, beat.echo))
    body = MAGIC + bytes([VERSION]) + head + payload
    data = body + _tag(key, body)
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"heartbeat of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data


def encode(key: bytes, beat: Beat) -> bytes:
    return encode_packed(key, beat, pack_payload(beat.payload))


def decode(key: bytes, data: bytes) -> Beat:
    if len(data) < len(MAGIC) + 1 + TAG_LEN or not data.startswith(MAGIC):
        raise Rejected("not a hakit heartbeat")
    if data[len(MAGIC)] != VERSION:
        raise Rejected(f"heartbeat version {data[len(MAGIC)]}, expected {VERSION}")
    body, tag = data[:-TAG_LEN], data[-TAG_LEN:]
    if not hmac.compare_digest(tag, _tag(key, body)):
        raise Rejected("bad authentication tag (another key, or forged)")
    try:
        fields = msgpack.unpackb(body[len(MAGIC) + 1 :], raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise Rejected(f"undecodable body: {exc}") from None
    if (
        not isinstance(fields, list)
        or len(fields) != 7
        or not all(isinstance(f, str) for f in fields[:2])
        or not all(isinstance(f, int) for f in fields[2:4])
        or not all(isinstance(f, bytes) for f in fields[4:6])
        or not isinstance(fields[6], dict)
    ):
        raise Rejected("malformed body")
    return Beat(*fields)
