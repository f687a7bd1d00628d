"""A mirror module replicating REP, and the application the mirror tests run on its
primary: random writes, creates, renames, removes and fsynced appends.  Both nodes'
copies compared entry by entry (assert_identical)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

from tests.helpers import wait_for

REP = "/srv/rep"
CONF = f'<rfs><replicated dir="{REP}"/></rfs>'

# The application: rewrites blocks of the first 4 MiB of a big file, creates, renames and
# removes small files, appends to a log with fsync.  Prints a count now and then.
APP = r"""
import os, random, sys, time
root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
for d in range(8):
    os.makedirs(f"{root}/d{d}", exist_ok=True)
big = os.open(f"{root}/big", os.O_WRONLY)
log = os.open(f"{root}/log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
small = [os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if f.startswith("f")]
n = 0
while True:
    n += 1
    r = rng.random()
    if r < 0.5:
        os.pwrite(big, rng.randbytes(4096), rng.randrange(0, 4 << 20, 4096))
    elif r < 0.75 or not small:
        path = f"{root}/d{rng.randrange(8)}/f{seed}_{n}"
        with open(path, "wb") as f:
            f.write(rng.randbytes(rng.randrange(1, 20000)))
        small.append(path)
    elif r < 0.85:
        path = small.pop(rng.randrange(len(small)))
        os.unlink(path)
    elif r < 0.95:
        i = rng.randrange(len(small))
        to = f"{root}/d{rng.randrange(8)}/f{seed}_{n}_r"
        os.rename(small[i], to)
        small[i] = to
    else:
        os.write(log, b"entry %d\n" % n)
        os.fsync(log)
    if n % 100 == 0:
        print(n, flush=True)
    time.sleep(0.002)
"""


def tree(sim, node: str) -> dict[str, tuple[object, ...]]:
    """Every entry of the node's copy (the real directory, under the mount): type, mode,
    owner, size, content digest, symlink target, a file's mtime."""
    root = sim.host_path(node, REP)
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            what: object = None
            if stat.S_ISREG(st.st_mode):
                what = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns)
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            out[str(path.relative_to(root))] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                                st.st_size if kind != stat.S_IFDIR else 0, what)
    return out


def assert_identical(sim, primary: str, secondary: str) -> None:
    """Both copies the same once what is in flight has arrived."""
    diff: dict[str, tuple[object, object]] = {}

    def same() -> bool:
        a, b = tree(sim, primary), tree(sim, secondary)
        diff.clear()
        diff.update({k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
        return not diff

    try:
        wait_for("identical copies", same, timeout=10)
    except AssertionError:
        raise AssertionError(f"the copies differ ({primary}, {secondary}): "
                             f"{sorted(diff.items())[:5]}") from None


class App:
    """The application writing on a node's mounted directory."""

    def __init__(self, sim, node: str, seed: int) -> None:
        self.proc = sim.popen(node, ["python3", "-c", APP, REP, str(seed)], stdout=subprocess.PIPE, text=True)
        self.count = 0

    def run_until(self, more: int) -> None:
        assert self.proc.stdout is not None
        target = self.count + more
        for line in self.proc.stdout:
            self.count = int(line)
            if self.count >= target:
                return
        raise AssertionError(f"the application stopped at {self.count}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
