"""atheris target: the frame codec (native/wire/_wire.pyx: FrameDecoder, pack_frame)
that every hakit byte stream goes through, on arbitrary bytes as a peer's stream.

The first byte picks how the stream is cut into feed() calls and the decoder's limit;
the rest is the stream.  Decoding returns objects or raises FrameError, nothing else;
every object decoded encodes again into a frame that decodes to the same encoding.
The codec and msgpack are compiled, so atheris would see no coverage in them: the
target runs under tests/fuzz/mutate.py's seeded mutation loop instead.

    python -m tests.fuzz.fuzz_wire --seeds DIR    # write the seed corpus
    python -m tests.fuzz.fuzz_wire [-max_total_time=S -seed=N ...] SEEDS... [FILES...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.fuzz import mutate

SMALL_LIMIT = 4096


def write_seeds(out: Path) -> None:
    from hakit._wire import pack_frame

    # What the CLI and the node RPC exchange, in shape: requests, replies, errors, bulk.
    objects = [
        {"op": "status", "args": {"module": "mirror", "verbose": True}, "id": 1},
        {"ok": True, "result": [{"node": "node1", "state": "PRIM", "since": 1.5}], "id": 1},
        {"ok": False, "error": "no such module", "code": -2},
        [None, 0, -1, 2**63 - 1, -(2**63), 3.25, "é", b"\x00\xff" * 40, [], {}],
        {1: "int key", b"b": "bytes key", 2.5: [1, [2, [3, [4]]]]},
        "x" * 300,
    ]
    out.mkdir(parents=True, exist_ok=True)
    for i, obj in enumerate(objects):
        frame = pack_frame(obj)
        (out / f"{i:02d}-one").write_bytes(bytes([i * 37 % 256]) + frame)
        (out / f"{i:02d}-two").write_bytes(bytes([255 - i]) + frame + frame[: len(frame) // 2])


def main() -> int:
    from hakit._wire import MAX_FRAME, FrameDecoder, FrameError, pack_frame

    def decode_all(stream: bytes, step: int, limit: int) -> list[object]:
        decoder = FrameDecoder(limit)
        out: list[object] = []
        for at in range(0, len(stream), step):
            got = decoder.feed(stream[at : at + step])
            assert isinstance(got, list), got
            out.extend(got)
        return out

    def one_input(data: bytes) -> None:
        if not data:
            return
        step = (data[0] & 0x7F) + 1
        limit = SMALL_LIMIT if data[0] & 0x80 else MAX_FRAME
        try:
            objects = decode_all(data[1:], step, limit)
        except FrameError:
            return
        for obj in objects:
            try:
                frame = pack_frame(obj, limit)
            except FrameError:
                continue  # floats come back as 64-bit: a frame near the limit may outgrow it
            again = decode_all(frame, len(frame), limit)
            assert len(again) == 1 and pack_frame(again[0], limit) == frame, (obj, again)

    return mutate.main(sys.argv[1:], one_input)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seeds"]:
        write_seeds(Path(sys.argv[2]))
    else:
        sys.exit(main())
