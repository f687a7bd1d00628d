"""Zero-loss check of a mirror module: every record the application was told is
durable survives a crash of the primary.

A writer on the primary appends numbered records to a file in the replicated
directory, fsyncs each, and reports it acknowledged only after fsync returned.  The
primary node is killed at a random moment (`sim kill`: every process dies at once);
once the other node has taken over, every acknowledged record must be in its copy.
The killed node is revived and comes back as secondary; the next round writes on
the new primary.  Used by bench/zeroloss.py (many rounds) and the tests (a few).
"""

from __future__ import annotations

import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from hakit.config.safe_archive import pack
from hakit.errors import HakitError
from hakit.testing.sim import Sim

MODULE = "zl"
REPDIR = "/srv/zeroloss"
WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
n = 0
while True:
    n += 1
    os.write(fd, b"record %08d\n" % n)
    os.fsync(fd)
    print(n, flush=True)
"""
CONF = """<!DOCTYPE safe>
<safe>
  <service mode="mirror">
    <heart><heartbeat name="default"/></heart>
    <rfs><replicated dir="{repdir}"/></rfs>
    <user/>
  </service>
</safe>
"""


@dataclass
class Result:
    rounds: int = 0
    acked: int = 0
    lost: int = 0
    details: list[str] = field(default_factory=list)


def _hakit(sim: Sim, node: str, *args: str) -> str:
    run = sim.exec(node, ["hakit", *args], check=False, capture=True, timeout=120)
    if run.returncode != 0:
        raise HakitError(f"{node}: hakit {' '.join(args)}: {run.stderr.strip()}")
    return run.stdout


def _state(sim: Sim, node: str) -> str:
    return _hakit(sim, node, "state", "-m", MODULE).split(":", 1)[1].split("since")[0].strip()


def _wait(sim: Sim, node: str, expected: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (now := _state(sim, node)) != expected:
        if time.monotonic() > deadline:
            raise HakitError(f"{node} is {now}, not {expected}, after {timeout:g} s")
        time.sleep(0.1)


def setup(sim: Sim, workdir: Path) -> None:
    """A mirror module on node1 and node2 of a started cluster with REPDIR per node."""
    src = workdir / "zl"
    (src / "conf").mkdir(parents=True)
    (src / "bin").mkdir()
    (src / "conf" / "userconfig.xml").write_text(CONF.format(repdir=REPDIR))
    archive = workdir / "zl.safe"
    pack(src, archive)
    for node in ("node1", "node2"):
        _hakit(sim, node, "module", "install", "-m", MODULE, "-M", "9", str(archive))
    _hakit(sim, "node1", "prim", "-m", MODULE)
    _hakit(sim, "node2", "start", "-m", MODULE)
    _wait(sim, "node2", "SECOND (Ready)")
    _wait(sim, "node1", "PRIM (Ready)")


def one_round(sim: Sim, primary: str, secondary: str, n: int, rng: random.Random) -> tuple[int, int]:
    """(acknowledged, lost) for one crash of `primary`."""
    name = f"records-{n}"
    writer = sim.popen(primary, ["python3", "-c", WRITER, f"{REPDIR}/{name}"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert writer.stdout is not None
    time.sleep(rng.uniform(0.3, 1.5))
    sim.kill(primary)
    acked = 0
    for line in writer.stdout:
        acked = int(line)
    writer.wait()
    _wait(sim, secondary, "ALONE (Ready)")
    path = sim.host_path(secondary, REPDIR) / name
    have = set(path.read_text().splitlines()) if path.exists() else set()
    lost = sum(1 for i in range(1, acked + 1) if f"record {i:08d}" not in have)
    sim.revive(primary)
    _hakit(sim, primary, "start", "-m", MODULE)
    _wait(sim, primary, "SECOND (Ready)")
    _wait(sim, secondary, "PRIM (Ready)")
    return acked, lost


def run(sim: Sim, workdir: Path, rounds: int, seed: int | None = None) -> Result:
    rng = random.Random(seed)
    setup(sim, workdir)
    result = Result()
    primary, secondary = "node1", "node2"
    for n in range(1, rounds + 1):
        acked, lost = one_round(sim, primary, secondary, n, rng)
        result.rounds += 1
        result.acked += acked
        result.lost += lost
        result.details.append(f"round {n}: {primary} killed after {acked} acknowledged records, {lost} lost")
        primary, secondary = secondary, primary
    return result
