"""Zero-loss check of the mirror: crash the primary while an application writes
fsync'ed records, and count acknowledged records missing after failover.

The scenario lives in hakit.testing.zeroloss (the tests run it for a few rounds).
With --disk, two more rounds: the secondary's disk fills then frees (the mirror must
heal to identical copies), and fills before the primary is killed (the survivor must
refuse its short copy).  Prints each round and ends with one JSON line: rounds, acked,
lost (and healed, refused).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from hakit.errors import HakitError
from hakit.testing import zeroloss
from hakit.testing.sim import Sim


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--disk", action="store_true", help="add the full-disk rounds")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/zeroloss.py needs root (simulated cluster)", file=sys.stderr)
        return 1
    sim = Sim("hkbzl")
    try:
        sim.up(nodes=2, daemon=True, paths=(zeroloss.REPDIR,), owner_pid=os.getpid(),
               sizes={zeroloss.REPDIR: zeroloss.DISK_SIZE} if args.disk else None)
        with tempfile.TemporaryDirectory(prefix="hakit-zl-") as tmp:
            result = zeroloss.run(sim, Path(tmp), args.rounds, args.seed, disk=args.disk)
    except HakitError as exc:
        print(f"bench/zeroloss.py: {exc}", file=sys.stderr)
        return 1
    finally:
        sim.down()
    for line in result.details:
        print(line)
    out = {"rounds": result.rounds, "acked": result.acked, "lost": result.lost}
    if args.disk:
        out |= {"healed": result.healed, "refused": result.refused}
    print(json.dumps(out))
    return 0 if result.lost == 0 and (not args.disk or (result.healed, result.refused) == (1, 1)) else 1


if __name__ == "__main__":
    sys.exit(main())
