"""How late do heartbeats arrive, idle and with both cores saturated?

Two simulated nodes run hakit's heartbeat code (hakit.heart.link.Heart, the one
the module process uses) with the default pulse and timeout; each records the gap
between consecutive datagrams from its peer.  Phase 1: an idle machine.  Phase 2:
one busy process per core on the host, at the same priority as hakit.  A gap as
long as the timeout would have been a false failover.

Prints the gaps' median, 99.9th percentile and maximum for each phase, their
ratio to the timeout, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hakit.config.module_model import Heart as HeartConfig
from hakit.testing.sim import Sim

PEER_SCRIPT = r"""
import asyncio, json, sys, time
import uvloop
from hakit.heart.link import Heart, Lan
from hakit.runtime.resources import Resources
from hakit.runtime.log import ModuleLog
from hakit.store.module_store import ModuleStore

me, peer, my_addr, peer_addr, pulse, timeout, seconds, out = sys.argv[1:]
pulse, timeout, seconds = float(pulse), float(timeout), float(seconds)

async def main():
    store = ModuleStore(__import__("pathlib").Path(out + ".db"))
    gaps, last, lost = [], [None], [0]
    heart = Heart(module="bench", node=me, key=b"k" * 32, port=9399, pulse=pulse, timeout=timeout,
                  lans=[Lan("default", my_addr, {peer: peer_addr})], incarnation=1,
                  resources=Resources(store), log=ModuleLog("bench", store), on_change=lambda: None)
    received = heart.received
    def spy(lan, data, source):
        now = time.monotonic()
        if last[0] is not None:
            gaps.append(now - last[0])
        last[0] = now
        received(lan, data, source)
    heart.received = spy
    await heart.start()
    heart.update({"state": "PRIM"})
    await asyncio.sleep(seconds)
    lost[0] = sum(1 for g in gaps if g >= timeout)
    await heart.close()
    with open(out, "w") as f:
        json.dump({"gaps": gaps, "false_losses": lost[0]}, f)

uvloop.run(main())
"""


def hogs(n: int) -> list[subprocess.Popen[bytes]]:
    """One busy process per core, at hakit's own priority."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def phase(sim: Sim, seconds: float, pulse: float, timeout: float, work: Path, tag: str) -> dict[str, float]:
    procs = []
    outs = {}
    for me, peer in (("node1", "node2"), ("node2", "node1")):
        out = f"/var/lib/hakit/{tag}-{me}.json"
        outs[me] = sim.host_path(me, out)
        procs.append(sim.popen(me, [sys.executable, str(work / "peer.py"), me, peer, sim.addr(me),
                                    sim.addr(peer), str(pulse), str(timeout), str(seconds), out]))
    for p in procs:
        p.wait(timeout=seconds + 30)
    gaps: list[float] = []
    false_losses = 0
    for path in outs.values():
        data = json.loads(path.read_text())
        gaps += data["gaps"]
        false_losses += data["false_losses"]
    gaps.sort()
    return {
        "median_ms": statistics.median(gaps) * 1000,
        "p999_ms": gaps[min(len(gaps) - 1, int(len(gaps) * 0.999))] * 1000,
        "max_ms": gaps[-1] * 1000,
        "samples": len(gaps),
        "false_losses": false_losses,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/heartbeat.py needs root (it builds a simulated cluster)", file=sys.stderr)
        return 2
    defaults = HeartConfig()
    pulse, timeout = defaults.pulse, defaults.timeout
    cores = os.cpu_count() or 2
    sim = Sim("hkbhb")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hakit-bench-") as tmp:
        work = Path(tmp)
        (work / "peer.py").write_text(PEER_SCRIPT)
        os.chmod(tmp, 0o755)
        try:
            sim.up(nodes=2, daemon=False, owner_pid=os.getpid())
            results["idle"] = phase(sim, args.seconds, pulse, timeout, work, "idle")
            busy = hogs(cores)
            try:
                time.sleep(1)
                results["saturated"] = phase(sim, args.seconds, pulse, timeout, work, "busy")
            finally:
                for p in busy:
                    p.kill()
                    p.wait()
        finally:
            sim.down()
    print(f"pulse {pulse * 1000:.0f} ms, timeout {timeout * 1000:.0f} ms, {cores} busy processes in phase 2")
    for name, r in results.items():
        print(f"{name:>10}: median gap {r['median_ms']:.1f} ms, p99.9 {r['p999_ms']:.1f} ms, "
              f"max {r['max_ms']:.1f} ms ({r['max_ms'] / (timeout * 1000):.2f} of the timeout), "
              f"{r['samples']} gaps, {r['false_losses']} false losses")
    print(json.dumps({
        "pulse_ms": pulse * 1000, "timeout_ms": timeout * 1000,
        "idle_max_gap_ms": round(results["idle"]["max_ms"], 1),
        "saturated_max_gap_ms": round(results["saturated"]["max_ms"], 1),
        "saturated_p999_gap_ms": round(results["saturated"]["p999_ms"], 1),
        "max_gap_over_timeout": round(results["saturated"]["max_ms"] / (timeout * 1000), 3),
        "false_losses": int(results["idle"]["false_losses"] + results["saturated"]["false_losses"]),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
