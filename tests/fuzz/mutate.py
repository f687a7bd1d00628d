"""A seeded mutation loop, for a target whose code atheris cannot see (compiled, so no
coverage to guide it): the seeds mutated at random, deterministically for one -seed.

Takes the libFuzzer options run.py gives (-max_total_time, -timeout, -seed,
-artifact_prefix, others ignored) and paths: directories hold seeds, files are
replayed once each, as libFuzzer does.  A failure's input is written to
<artifact_prefix>crash-<sha1>; reports end with the same lines as libFuzzer's.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

# Bytes that mean something to length fields and msgpack type tags.
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC0, 0xC1, 0xC4, 0xD4, 0xD9, 0xDC, 0xDE, 0xDF, 0xC7, 0x90)
WIDE = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFF, 0x10000, 4095, 4096, 4097)


class Mutator:
    def __init__(self, seeds: Sequence[bytes], seed: int) -> None:
        self.seeds = [s for s in seeds if s] or [b"\x00"]
        self.rng = random.Random(seed)

    def mutate(self) -> bytes:
        rng = self.rng
        data = bytearray(rng.choice(self.seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            what = rng.randrange(7)
            if what == 0 and data:
                data[at % len(data)] ^= 1 << rng.randrange(8)
            elif what == 1 and data:
                data[at % len(data)] = rng.choice(INTERESTING)
            elif what == 2:
                data[at:at] = rng.randbytes(rng.randint(1, 16))
            elif what == 3 and data:
                del data[at : at + rng.randint(1, 16)]
            elif what == 4 and data:
                n = rng.randint(1, 64)
                data[at:at] = data[at : at + n]
            elif what == 5:
                other = rng.choice(self.seeds)
                cut = rng.randrange(len(other) + 1)
                data[at:] = other[cut:]
            else:
                data[at : at + 4] = rng.choice(WIDE).to_bytes(4, rng.choice(("big", "little")))
        return bytes(data)


def _options(argv: Sequence[str]) -> tuple[dict[str, str], list[Path]]:
    opts, paths = {}, []
    for arg in argv:
        if arg.startswith("-") and "=" in arg:
            key, value = arg[1:].split("=", 1)
            opts[key] = value
        else:
            paths.append(Path(arg))
    return opts, paths


class _Hang(Exception):
    pass


def _on_alarm(_signum: int, _frame: object) -> None:
    raise _Hang("the input took longer than -timeout")


def main(argv: Sequence[str], target: Callable[[bytes], None]) -> int:
    opts, paths = _options(argv)
    prefix = opts.get("artifact_prefix", "./")
    timeout = int(opts.get("timeout", "10"))
    files = [p for p in paths if p.is_file()]
    seeds = [f.read_bytes() for d in paths if d.is_dir() for f in sorted(d.rglob("*")) if f.is_file()]
    seed = int(opts.get("seed", "0")) or int(time.time())
    limit = float(opts.get("max_total_time", "0")) or math.inf  # 0: no limit, as libFuzzer
    mutator = Mutator(seeds, seed)
    # A crash of the interpreter leaves no traceback: its input is kept here, last run.
    last = os.open(f"{prefix}last-input", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    signal.signal(signal.SIGALRM, _on_alarm)
    print(f"INFO: Seed: {seed}", file=sys.stderr)
    start = time.monotonic()
    runs = 0
    replay = iter(files)
    while True:
        path = next(replay, None)
        if path is not None:
            data = path.read_bytes()
        elif files or time.monotonic() - start >= limit:
            break
        else:
            data = mutator.mutate()
        os.ftruncate(last, 0)
        os.pwrite(last, data, 0)
        signal.alarm(timeout)
        try:
            target(data)
        except BaseException:
            signal.alarm(0)
            traceback.print_exc()
            out = Path(f"{prefix}crash-{hashlib.sha1(data).hexdigest()}")
            out.write_bytes(data)
            print(f"==ERROR: the target failed\nTest unit written to {out}", file=sys.stderr)
            return 1
        signal.alarm(0)
        runs += 1
    os.close(last)
    os.unlink(f"{prefix}last-input")
    print(f"Done {runs} runs in {int(time.monotonic() - start)} second(s)", file=sys.stderr)
    return 0
