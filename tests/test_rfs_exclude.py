"""<notreplicated> in hakit-rfs (--exclude, --only, --exclude-path): what is left out
never reaches the secondary, neither by the stream nor by a full sync, which also leaves
the secondary's own entries of those names alone; a rename across the boundary fails
with EXDEV, so that mv copies and deletes instead."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hakit.rfs.daemon import rfs_binary
from tests.rfs_pair import PORT, REP, full_sync, tree

# A regex on files and directories, a directory by regex, a directory by path.
EXCLUDES = ("--exclude", r".*\.tmp$", "--exclude", "^scratch$", "--exclude-path", "data/cache/")

# Python run on the primary, through the mount.
PRELUDE = r"""
import ctypes, errno, os, subprocess, sys
root = sys.argv[1]
p = lambda *a: os.path.join(root, *a)
def put(path, data="x"):
    os.makedirs(os.path.dirname(p(path)), exist_ok=True)
    with open(p(path), "w") as f:
        f.write(data)
def rename(a, b, flags=0):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, p(a).encode(), -100, p(b).encode(), flags) == 0:   # AT_FDCWD
        return "ok"
    return errno.errorcode[ctypes.get_errno()]
"""

LIVE = PRELUDE + r"""
put("keep", "kept")
put("a.tmp", "the primary's only")
put("conf/config.tmp.swap", "kept: the regex wants .tmp at the end")
put("conf/x.tmp")
put("dir.tmp/inner", "beneath a directory the regex matches")
put("data/keep", "kept")
put("data/cache/blob", "x" * 100_000)
put("data/cache/sub/deep")
put("data/cachet", "kept: only data/cache and what it holds are left out")
put("scratch/w")
put("scratch/sub/z")
os.chmod(p("data/cache"), 0o700)
os.chmod(p("a.tmp"), 0o600)
os.utime(p("scratch"), ns=(1, 1))
os.setxattr(p("a.tmp"), "user.k", b"v")
os.truncate(p("data/cache/blob"), 10)
with open(p("data/cache/blob"), "ab") as f:
    f.write(b"more")
    os.fsync(f.fileno())
os.symlink("keep", p("l.tmp"))
os.mkfifo(p("scratch/fifo"))
print(rename("scratch/w", "scratch/w2"), rename("a.tmp", "b.tmp"))
os.unlink(p("conf/x.tmp"))
os.unlink(p("scratch/sub/z"))
os.rmdir(p("scratch/sub"))
"""


def start_attached(nodes, *options: str):
    sim, start = nodes
    prim, second = start(*options)
    assert prim(f"attach {sim.addr('node2')} {PORT}") == "ok"
    return sim, prim, second


def lay(root: Path, **files: str) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def same_for(names: set[str], primary: Path, secondary: Path) -> None:
    """The secondary has exactly these names, as the primary has them."""
    ours = tree(primary)
    assert set(tree(secondary)) == names
    assert tree(secondary) == {k: v for k, v in ours.items() if k in names}


@pytest.mark.root
def test_excluded_entries_stay_on_the_primary(nodes):
    sim, prim, _ = start_attached(nodes, *EXCLUDES)
    run = sim.exec("node1", ["python3", "-c", LIVE, REP])
    assert run.stdout.split() == ["ok", "ok"]      # renames within the excluded part work
    primary, secondary = sim.host_path("node1", REP), sim.host_path("node2", REP)
    assert {"b.tmp", "dir.tmp/inner", "data/cache/blob", "scratch/w2", "l.tmp"} <= set(tree(primary))
    replicated = {"keep", "conf", "conf/config.tmp.swap", "data", "data/keep", "data/cachet"}
    same_for(replicated, primary, secondary)
    assert prim.stats()["diverged"] == "0"
    full_sync(prim)                                 # sends none of them either
    same_for(replicated, primary, secondary)


@pytest.mark.root
def test_full_sync_leaves_the_secondarys_excluded_entries_alone(nodes):
    sim, start = nodes
    primary, secondary = sim.host_path("node1", REP), sim.host_path("node2", REP)
    lay(primary, keep="new", **{"a.tmp": "ours", "data/cache/blob": "ours", "scratch/w": "ours",
                                "dir.tmp/inner": "ours", "conf/config.tmp.swap": "ours"})
    lay(secondary, keep="old", stale="gone", scratch="a file there", **{
        "a.tmp": "theirs", "data/cache/theirs": "theirs", "conf/old.tmp": "theirs"})
    theirs = tree(secondary)
    prim, _ = start(*EXCLUDES)
    assert prim(f"attach {sim.addr('node2')} {PORT}") == "ok"
    full_sync(prim)
    kept = {"a.tmp", "data/cache", "data/cache/theirs", "conf/old.tmp", "scratch"}
    ours = {k: v for k, v in tree(primary).items() if k in {"keep", "conf", "conf/config.tmp.swap", "data"}}
    assert tree(secondary) == ours | {k: v for k, v in theirs.items() if k in kept}
    assert (secondary / "keep").read_text() == "new" and not (secondary / "stale").exists()


ONLY = PRELUDE + r"""
put("a.db")
put("a.txt")
put("d/b.db")
put("d/c.log")
os.makedirs(p("d/e"))
os.chmod(p("d"), 0o750)
os.symlink("a.db", p("l"))
os.symlink("a.db", p("l.db"))
print(rename("a.txt", "a2.txt"), rename("d/b.db", "d/b.txt"), rename("d/c.log", "d/c.db"))
"""


@pytest.mark.root
def test_only_replicates_matching_files_and_every_directory(nodes):
    sim, start = nodes
    primary, secondary = sim.host_path("node1", REP), sim.host_path("node2", REP)
    lay(primary, **{name: name for name in ("pre.db", "pre.txt", "old/x.db", "old/x.txt")})
    lay(secondary, **{"theirs.txt": "not replicated: left alone", "stale.db": "gone on the primary"})
    prim, _ = start("--only", r".*\.db$")
    assert prim(f"attach {sim.addr('node2')} {PORT}") == "ok"
    full_sync(prim)
    run = sim.exec("node1", ["python3", "-c", ONLY, REP])
    assert run.stdout.split() == ["ok", "EXDEV", "EXDEV"]
    replicated = {"pre.db", "old", "old/x.db", "a.db", "d", "d/b.db", "d/e", "l.db"}
    assert set(tree(secondary)) == replicated | {"theirs.txt"}
    ours = tree(primary)
    assert {k: v for k, v in tree(secondary).items() if k != "theirs.txt"} == {
        k: v for k, v in ours.items() if k in replicated}
    assert (secondary / "theirs.txt").read_text() == "not replicated: left alone"
    assert oct(ours["d"][1] & 0o7777) == "0o750"
    assert prim.stats()["diverged"] == "0"


RENAMES = PRELUDE + r"""
put("f.tmp", "to be kept")
put("g", "to be left out")
put("keep")
put("z.tmp")
put("dir/inner", "moves into an excluded directory")
put("data/cache/blob")
put("x.tmp")
print(rename("f.tmp", "f"), rename("g", "g.tmp"), rename("dir", "data/cache/dir"),
      rename("keep", "z.tmp", 2),                                      # RENAME_EXCHANGE
      rename("x.tmp", "y.tmp"), rename("keep", "keep2"))
for a, b in (("f.tmp", "f"), ("g", "g.tmp"), ("dir", "data/cache/dir")):
    subprocess.run(["mv", p(a), p(b)], check=True)
"""


@pytest.mark.root
def test_rename_across_the_boundary_is_exdev_and_mv_still_works(nodes):
    sim, prim, _ = start_attached(nodes, *EXCLUDES)
    run = sim.exec("node1", ["python3", "-c", RENAMES, REP])
    assert run.stdout.split() == ["EXDEV", "EXDEV", "EXDEV", "EXDEV", "ok", "ok"]
    primary, secondary = sim.host_path("node1", REP), sim.host_path("node2", REP)
    assert {"g.tmp", "data/cache/dir/inner", "y.tmp"} <= set(tree(primary))
    same_for({"f", "keep2", "data"}, primary, secondary)
    assert (secondary / "f").read_text() == "to be kept"
    assert prim.stats()["diverged"] == "0"


@pytest.mark.parametrize("option, value, message", [
    ("--exclude", "(", "--exclude '(': Unmatched ( or \\("),
    ("--only", "[a", "--only '[a': Unmatched [, [^, [:, [., or [="),
    ("--exclude", "", "--exclude: an empty regular expression"),
    ("--exclude-path", "../up", "--exclude-path '../up': expected a path relative to the replicated"),
])
def test_a_bad_rule_is_a_usage_error(tmp_path: Path, option: str, value: str, message: str):
    argv = [str(rfs_binary()), "primary", "--dir", str(tmp_path), "--ctl", str(tmp_path / "c"), option, value]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"hakit-rfs: {message}"), run.stderr
