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

import dataclasses
import hmac
from collections.abc import Iterable
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


def encode_for(key: bytes, beat: Beat, echoes: Iterable[bytes], payload: bytes) -> list[bytes]:
    """One datagram per echo, each `beat` answering that challenge (beat.echo and
    beat.payload are not read: `payload` is pack_payload(beat.payload)).  What the
    datagrams share is packed and hashed once: a node of a large farm sends one per peer
    every pulse."""
    packer = msgpack.Packer(use_bin_type=True)
    pack = packer.pack
    head = MAGIC + bytes([VERSION]) + packer.pack_array_header(7) + b"".join(
        map(pack, (beat.module, beat.sender, beat.incarnation, beat.seq, beat.nonce)))
    mac = hmac.new(key, head, "sha256")
    out = []
    for echo in echoes:
        rest = pack(echo) + payload
        tag = mac.copy()
        tag.update(rest)
        data = head + rest + tag.digest()[:TAG_LEN]
        if len(data) > MAX_DATAGRAM:
            raise ValueError(f"heartbeat of {len(data)} bytes exceeds {MAX_DATAGRAM}")
        out.append(data)
    return out


def encode(key: bytes, beat: Beat) -> bytes:
    return encode_for(key, beat, [beat.echo], pack_payload(beat.payload))[0]


def decode_head(key: bytes, data: bytes) -> tuple[Beat, bytes]:
    """The datagram's fields, its payload still packed (Beat.payload empty): a receiver
    unpacks it only when it differs from the sender's last (unpack_payload)."""
    if len(data) < len(MAGIC) + 1 + TAG_LEN or not data.startswith(MAGIC):
        raise Rejected("not a hakit heartbeat")
    if data[len(MAGIC)] != VERSION:
        raise Rejected(f"heartbeat version {data[len(MAGIC)]}, expected {VERSION}")
    body, tag = data[:-TAG_LEN], data[-TAG_LEN:]
    if not hmac.compare_digest(tag, _tag(key, body)):
        raise Rejected("bad authentication tag (another key, or forged)")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True)
    unpacker.feed(body[len(MAGIC) + 1 :])
    try:
        fields = [unpacker.unpack() for _ in range(6)] if unpacker.read_array_header() == 7 else []
        payload = body[len(MAGIC) + 1 + unpacker.tell():]
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, msgpack.OutOfData) as exc:
        raise Rejected(f"undecodable body: {exc or type(exc).__name__}") from None
    # (Checked here, not inside the try: Rejected is a ValueError.)
    if [type(f) for f in fields] != [str, str, int, int, bytes, bytes]:
        raise Rejected("malformed body")
    module, sender, incarnation, seq, nonce, echo = fields
    return Beat(module, sender, incarnation, seq, nonce, echo, {}), payload


def unpack_payload(payload: bytes) -> dict[str, Any]:
    try:
        out = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise Rejected(f"undecodable payload: {exc}") from None
    if not isinstance(out, dict):
        raise Rejected("malformed payload")
    return out


def decode(key: bytes, data: bytes) -> Beat:
    beat, payload = decode_head(key, data)
    return dataclasses.replace(beat, payload=unpack_payload(payload))
