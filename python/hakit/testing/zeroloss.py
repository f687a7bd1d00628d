"""Zero-loss check of a mirror module: every record the application was told is
durable survives a crash of the primary.

A writer on the primary appends numbered records to a file in the replicated
directory, fsyncs each, and reports it acknowledged only after fsync returned.  The
primary node is killed at a random moment (`sim kill`: every process dies at once);
once the other node has taken over, every acknowledged record must be in its copy.
The killed node is revived and comes back as secondary; the next round writes on
the new primary.  Used by bench/zeroloss.py (many rounds) and the tests (a few).

With disk rounds (REPDIR a file system of its own on each node, DISK_SIZE), two more:
the secondary's disk fills while records are written, then space is freed: the mirror
heals by itself to identical copies; and the secondary's disk fills, then the primary is
killed: the survivor, whose copy lacks acknowledged records, must not become primary.
"""

from __future__ import annotations

import os
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
DISK_SIZE = "64M"  # of REPDIR on each node, for the disk rounds
PAD = 64 << 10  # bytes of padding per record in the disk rounds: the disk fills in seconds
PACE_S = 0.005  # between records in the disk rounds: the primary's own disk must not fill first
# Appends numbered records (padded with argv[2] bytes, argv[3] seconds apart), each
# fsynced, and prints its number once fsync returned; ends at the first error.
WRITER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
pad = b"." * int(sys.argv[2]) if len(sys.argv) > 2 else b""
pace = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
n = 0
while True:
    n += 1
    os.write(fd, b"record %08d %s\n" % (n, pad))
    os.fsync(fd)
    print(n, flush=True)
    time.sleep(pace)
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
    refused: int = 0  # disk rounds: the survivor held a short copy and did not become primary
    healed: int = 0  # disk rounds: the mirror healed by itself to identical copies
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


def _missing(sim: Sim, node: str, name: str, acked: int) -> int:
    path = sim.host_path(node, REPDIR) / name
    have = {line[:15] for line in path.read_text().splitlines()} if path.exists() else set()
    return sum(1 for i in range(1, acked + 1) if f"record {i:08d}" not in have)


def _fill(sim: Sim, node: str, leave: int = 1 << 20) -> Path:
    """The node's disk full but for `leave` bytes, by a file written behind hakit's back."""
    root = sim.host_path(node, REPDIR)
    st = os.statvfs(root)
    filler = root / ".filler"
    left = st.f_bavail * st.f_frsize - leave
    with open(filler, "wb") as f:
        while left > 0:
            f.write(b"\0" * min(left, 1 << 20))
            left -= 1 << 20
    return filler


def _write_until_outdated(sim: Sim, primary: str, secondary: str, name: str) -> subprocess.Popen[str]:
    """A writer on the primary, running once the secondary reports its copy outdated."""
    writer = sim.popen(primary, ["python3", "-c", WRITER, f"{REPDIR}/{name}", str(PAD), str(PACE_S)],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        _wait(sim, secondary, "SECOND (NotReady)", timeout=30)
    except HakitError:
        writer.kill()
        writer.wait()
        raise
    return writer


def heal_round(sim: Sim, primary: str, secondary: str, n: int) -> tuple[int, int]:
    """The secondary's disk fills, then frees: (acknowledged, missing once healed)."""
    name = f"records-{n}"
    filler = _fill(sim, secondary)
    writer = _write_until_outdated(sim, primary, secondary, name)
    _wait(sim, primary, "ALONE (Ready)")
    writer.kill()  # before the primary's own disk fills
    acked = sum(1 for _ in writer.communicate()[0].split())
    filler.unlink()
    _wait(sim, secondary, "SECOND (Ready)")
    _wait(sim, primary, "PRIM (Ready)")
    lost = _missing(sim, secondary, name, acked)
    sim.exec(primary, ["rm", f"{REPDIR}/{name}"])  # room for the next round, on both
    return acked, lost


def short_copy_round(sim: Sim, primary: str, secondary: str, n: int) -> tuple[int, bool]:
    """The secondary's disk fills, then the primary dies: (acknowledged, whether the
    survivor refused to become primary with its short copy).  Healed afterwards: space
    freed, the old primary back as primary (its copy is the reference), the other SECOND."""
    name = f"records-{n}"
    filler = _fill(sim, secondary)
    writer = _write_until_outdated(sim, primary, secondary, name)
    time.sleep(0.5)  # records acknowledged by the primary alone
    sim.kill(primary)
    acked = sum(1 for _ in writer.communicate()[0].split())
    time.sleep(2.0)  # well past the heartbeat timeout: it would have taken over by now
    refused = _state(sim, secondary) == "WAIT (NotReady)" and _missing(sim, secondary, name, acked) > 0
    filler.unlink()
    sim.revive(primary)
    _hakit(sim, primary, "start", "-m", MODULE)
    _wait(sim, primary, "PRIM (Ready)")
    _wait(sim, secondary, "SECOND (Ready)")
    return acked, refused


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
    lost = _missing(sim, secondary, name, acked)
    sim.revive(primary)
    _hakit(sim, primary, "start", "-m", MODULE)
    _wait(sim, primary, "SECOND (Ready)")
    _wait(sim, secondary, "PRIM (Ready)")
    return acked, lost


def run(sim: Sim, workdir: Path, rounds: int, seed: int | None = None, disk: bool = False) -> Result:
    """rounds crashes of the primary; with disk, then a heal round and a short-copy round
    (the cluster was made with sizes={REPDIR: DISK_SIZE})."""
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
    if disk:
        n = rounds + 1
        acked, lost = heal_round(sim, primary, secondary, n)
        result.rounds += 1
        result.acked += acked
        result.lost += lost
        result.healed += 1 if not lost else 0
        result.details.append(f"round {n}: {secondary}'s disk full, then freed: healed after {acked} "
                              f"acknowledged records, {lost} missing on it")
        acked, refused = short_copy_round(sim, primary, secondary, n + 1)
        result.rounds += 1
        result.refused += 1 if refused else 0
        verdict = "was" if refused else "was NOT"
        result.details.append(f"round {n + 1}: {secondary}'s disk full, {primary} killed after {acked} "
                              f"acknowledged records: the short copy {verdict} refused")
    return result
