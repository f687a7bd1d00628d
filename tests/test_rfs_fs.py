"""hakit-rfs's FUSE layer on this host (no simulated cluster: the layer needs no peer).

The same sequence of operations is applied through a mount and on a plain directory,
and the two trees must end identical; the same sequence through a primary attached to
a secondary (both on 127.0.0.1) must land identical in the secondary's directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import mmap
import os
import signal
import stat
import struct
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hakit.rfs.daemon import rfs_binary
from tests.rfs_local import free_port, fuse_mounted

pytestmark = pytest.mark.root

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER = 1, 2, 4, 0x10, 0x20
FIXED_NS = (1_600_000_000_123_456_789, 1_700_000_000_987_654_321)
USER_UID, USER_GID = 4321, 4322
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(src: Path, dst: Path, flags: int) -> None:
    if _libc.renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), flags) != 0:  # AT_FDCWD
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(src))


def as_user(fn: Any) -> None:
    """Runs fn in a child process with an unprivileged uid/gid and umask 022."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(USER_GID, USER_GID, USER_GID)
            os.setresuid(USER_UID, USER_UID, USER_UID)
            os.umask(0o022)
            fn()
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def posix_acl(user: int, perm: int) -> bytes:
    """The system.posix_acl_* value giving one more user `perm`."""
    entries = [(ACL_USER_OBJ, 7, -1), (ACL_USER, perm, user), (ACL_GROUP_OBJ, 5, -1), (ACL_MASK, 7, -1),
               (ACL_OTHER, 0, -1)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHi", t, p, i) for t, p, i in entries)


def workload(root: Path) -> dict[str, Any]:
    """Every kind of operation, deterministic; returns what the calls themselves saw."""
    seen: dict[str, Any] = {}
    p = root.joinpath
    (p("f1")).write_bytes(b"alpha" * 1000)
    with open(p("f1"), "ab") as f:
        f.write(b"+appended")
    a = os.open(p("app"), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)  # O_APPEND, two writers
    b = os.open(p("app"), os.O_WRONLY | os.O_APPEND)
    for i in range(20):
        os.write(a if i % 2 else b, f"line {i}\n".encode())
    os.close(a)
    os.close(b)
    p("t").write_bytes(bytes(i % 251 for i in range(10_000)))
    os.truncate(p("t"), 3000)                                # down, by path
    os.truncate(p("t"), 20_000)                              # up
    with open(p("t"), "r+b") as f:
        f.truncate(12_345)                                   # by descriptor
    with open(p("w"), "wb") as f:                            # open(O_TRUNC) of an existing file
        f.write(b"first version, longer")
    with open(p("w"), "wb") as f:
        f.write(b"second")
    fd = os.open(p("sparse"), os.O_CREAT | os.O_RDWR, 0o600)
    os.pwrite(fd, b"end", 5 << 20)
    os.pwrite(fd, b"start", 0)
    seen["hole"] = os.lseek(fd, 0, os.SEEK_HOLE)
    seen["data"] = os.lseek(fd, 1 << 20, os.SEEK_DATA)
    os.close(fd)
    p("r1").write_text("one")
    p("r2").write_text("two")
    os.rename(p("r1"), p("r2"))                              # over an existing file
    p("a").write_text("A")
    p("b").write_text("B")
    with pytest.raises(FileExistsError):
        renameat2(p("a"), p("b"), RENAME_NOREPLACE)
    renameat2(p("a"), p("c"), RENAME_NOREPLACE)
    renameat2(p("c"), p("b"), RENAME_EXCHANGE)
    os.makedirs(p("d1/d2/d3"))
    os.rmdir(p("d1/d2/d3"))
    p("d1/d2/inner").write_bytes(b"deep")
    os.rename(p("d1"), p("dir"))                             # a directory with content
    os.symlink("f1", p("ln"))
    os.symlink("dir/d2", p("ln-dir"))
    os.symlink("nowhere", p("dangling"))
    os.lchown(p("dangling"), 77, 88)
    os.mkfifo(p("fifo"), 0o640)
    os.chmod(p("f1"), 0o600)
    os.chown(p("f1"), 1234, 5678)
    os.utime(p("f1"), ns=FIXED_NS)
    os.setxattr(p("f1"), "user.keep", b"kept")
    os.setxattr(p("f1"), "user.gone", b"removed")
    os.removexattr(p("f1"), "user.gone")
    os.setxattr(p("dir"), "user.on-dir", b"1")
    with open(p("mm"), "wb") as f:
        f.truncate(65536)
    with open(p("mm"), "r+b") as f:                          # shared writable mmap
        m = mmap.mmap(f.fileno(), 65536)
        m[100:105] = b"mmap!"
        m[40000:40003] = b"far"
        m.flush()
        m.close()
    buf = mmap.mmap(-1, 8192)                                # page-aligned, for O_DIRECT
    buf.write(bytes(range(256)) * 32)
    fd = os.open(p("direct"), os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
    os.write(fd, buf)
    os.pwrite(fd, buf, 16384)
    os.close(fd)
    fd = os.open(p("sync"), os.O_CREAT | os.O_WRONLY | os.O_SYNC, 0o644)
    os.write(fd, b"synchronous")
    os.fsync(fd)
    os.close(fd)
    fd = os.open(p("doomed"), os.O_CREAT | os.O_RDWR, 0o644)  # unlinked while open
    os.unlink(p("doomed"))
    os.write(fd, b"nobody sees this")
    os.close(fd)
    p("shared").mkdir(mode=0o777)
    os.chmod(p("shared"), 0o777)

    def user_work() -> None:
        (p("shared/mine")).write_text("a user's file")       # umask 022: 0644
        p("shared/mydir").mkdir()
        os.symlink("mine", p("shared/mylink"))
    as_user(user_work)
    p("sgid").mkdir()
    os.chown(p("sgid"), 0, 3000)
    os.chmod(p("sgid"), 0o2775)
    p("sgid/file").write_text("group inherited")
    p("sgid/sub").mkdir()
    p("acl").mkdir()                                         # a default ACL, inherited by a new file
    os.setxattr(p("acl"), "system.posix_acl_default", posix_acl(USER_UID, 6))
    os.setxattr(p("acl"), "system.posix_acl_access", posix_acl(USER_UID, 5))
    p("acl/inherits").write_text("readable by the ACL's user")
    as_user(lambda: p("acl/inherits").read_text())          # the mount enforces the ACL
    return seen


def tree(root: Path, *, file_times: bool) -> dict[str, tuple[Any, ...]]:
    """Everything that must be equal: type, mode, owner, content, xattrs; with file_times,
    the mtime of regular files too (others only where the workload set it)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                body: Any = (st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            else:
                body = None
            xattrs = {} if stat.S_ISLNK(st.st_mode) else {
                k: os.getxattr(path, k) for k in sorted(os.listxattr(path))
                if k.startswith(("user.", "system.posix_acl_"))}
            keep_time = stat.S_ISREG(st.st_mode) and (file_times or rel == "f1")
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, body, xattrs,
                        st.st_mtime_ns if keep_time else None)
    return out


def test_operations_through_the_mount_match_a_plain_directory(rfs, base: Path):
    plain, mounted = base / "plain", base / "d"
    plain.mkdir()
    expected_seen = workload(plain)
    expected = tree(plain, file_times=False)

    primary = rfs("primary", "d", "--xattr")
    assert workload(mounted) == expected_seen
    through = tree(mounted, file_times=False)
    assert through == expected
    assert through["shared/mine"][1:4] == (0o644, USER_UID, USER_GID)
    assert through["sgid/file"][3] == 3000 and through["sgid/sub"][1] & stat.S_ISGID
    sparse = (mounted / "sparse").stat()
    assert sparse.st_size == (5 << 20) + 3 and sparse.st_blocks * 512 < 1 << 20
    counters = primary.stats()
    assert counters["role"] == "primary" and counters["attached"] == 0 and counters["diverged"] == 0

    assert primary.stop() == 0
    assert not fuse_mounted(mounted) and not primary.ctl.exists()
    assert tree(mounted, file_times=False) == expected               # the data is in the real directory


def test_rules_of_the_mount(rfs, base: Path):
    d = base / "d"
    primary = rfs("primary", "d")
    (d / "f").write_text("x")
    with pytest.raises(OSError) as xerr:
        os.setxattr(d / "f", "user.k", b"v")                 # xattrs only when replicated
    assert xerr.value.errno == errno.EOPNOTSUPP
    assert primary.stop() == 0

    x = base / "x"
    with_xattrs = rfs("primary", "x", "--xattr")
    fd = os.open(x / "big", os.O_CREAT | os.O_WRONLY, 0o644)
    for i in range(200):
        os.pwrite(fd, b"z" * 4096, i * 4096)
    os.close(fd)
    # FUSE_HANDLE_KILLPRIV_V2: the kernel's security.capability probe once per file, not per write.
    assert with_xattrs.stats()["getxattrs"] <= 2
    # A non-root writer (write, open with O_TRUNC) clears set-ID bits, as on a local file system.
    for name, how in (("tool", "ab"), ("tool2", "wb")):
        tool = x / name
        tool.write_bytes(b"#!/bin/sh\n")
        os.chmod(tool, 0o6777)
        as_user(lambda t=tool, h=how: t.open(h).write(b"# edited\n"))
        assert stat.S_IMODE(os.stat(tool).st_mode) == 0o777


def test_control_socket_and_signals(rfs, base: Path):
    d = base / "d"
    primary = rfs("primary", "d", "--nbremconn", "2", "--sendtimeout", "500", "--strict", "--compress")
    assert stat.S_IMODE(primary.ctl.stat().st_mode) == 0o600
    assert primary.cmd("frobnicate").startswith("error unknown command")
    assert primary.cmd("attach 127.0.0.1 notaport").startswith("error attach: bad port")
    assert primary.cmd("attach 127.0.0.1 1").startswith("error attach 127.0.0.1 1:")  # nobody listens
    assert primary.cmd("detach") == "ok"
    primary.proc.send_signal(signal.SIGTERM)
    assert primary.proc.wait(10) == 0 and not fuse_mounted(d)

    # Killed outright, its watchdog removes the mount.
    crashed = rfs("primary", "d")
    crashed.proc.kill()
    crashed.proc.wait()
    deadline = time.monotonic() + 5
    while fuse_mounted(d) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not fuse_mounted(d)
    assert os.listdir(d) == []                                # the real directory, reachable

    # Killed with its watchdog: the next run removes the dead mount it finds.
    dead = rfs("primary", "d")
    children = Path(f"/proc/{dead.proc.pid}/task/{dead.proc.pid}/children").read_text().split()
    for pid in [*map(int, children), dead.proc.pid]:
        os.kill(pid, signal.SIGKILL)
    dead.proc.wait()
    with pytest.raises(OSError) as exc:
        os.listdir(d)
    assert exc.value.errno == errno.ENOTCONN
    again = rfs("primary", "d")
    assert "removed the dead mount" in again.log.read_text()
    (d / "alive").write_text("served again")
    # A directory already served is refused.
    second = subprocess.run([str(rfs_binary()), "primary", "--dir", str(d), "--ctl", str(base / "s2.sock")],
                            capture_output=True, text=True, timeout=10)
    assert second.returncode == 1 and "already served" in second.stderr
    assert again.stop() == 0 and (d / "alive").read_text() == "served again"


@pytest.mark.parametrize(("argv", "code", "message"), [
    ([], 2, "missing role"),
    (["tertiary"], 2, "primary or secondary"),
    (["primary", "--dir", "/"], 2, "--dir and --ctl are required"),
    (["primary", "--dir", "D", "--ctl", "S", "--nbremconn", "17"], 2, "--nbremconn must be an integer"),
    (["primary", "--dir", "D", "--ctl", "S", "--bogus"], 2, "unknown option"),
    (["secondary", "--dir", "D", "--ctl", "S"], 2, "needs --listen"),
    (["secondary", "--dir", "D", "--ctl", "S", "--listen", "127.0.0.1:1", "--strict"], 2, "for the primary"),
    # The secondary writes what its peer sends: it proves who that is, or is told not to.
    (["secondary", "--dir", "D", "--ctl", "S", "--listen", "127.0.0.1:1"], 2, "give it --auth-key-file FILE"),
    (["secondary", "--dir", "D", "--ctl", "S", "--listen", "127.0.0.1:1", "--insecure",
      "--auth-key-file", "K"], 2, "--insecure contradicts"),
    (["primary", "--dir", "{tmp}/missing", "--ctl", "{tmp}/s"], 1, "no such directory"),
    (["primary", "--dir", "{tmp}/file", "--ctl", "{tmp}/s"], 1, "not a directory"),
])
def test_bad_arguments_give_one_clear_line(tmp_path: Path, argv: list[str], code: int, message: str):
    (tmp_path / "file").write_text("")
    run = subprocess.run([str(rfs_binary()), *(a.format(tmp=tmp_path) for a in argv)],
                         capture_output=True, text=True, timeout=10)
    assert run.returncode == code
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hakit-rfs: ") and message in lines[0], run.stderr


def test_primary_and_secondary_end_identical(rfs, base: Path):
    sdir, pdir = base / "sec", base / "pri"
    port = free_port()
    secondary = rfs("secondary", "sec", "--listen", f"127.0.0.1:{port}", "--insecure", "--xattr")
    primary = rfs("primary", "pri", "--xattr", "--compress")
    assert primary.cmd(f"attach 127.0.0.1 {port}") == "ok"
    assert secondary.cmd("attach 127.0.0.1 1").startswith("error attach: this is the secondary")

    workload(pdir)
    with open(pdir / "late", "wb", buffering=0) as f:        # created (waited for) before the pause
        os.kill(secondary.proc.pid, signal.SIGSTOP)         # it applies this write ticks later:
        f.write(b"buffered while the secondary sleeps")      # only the primary's times can match
        time.sleep(0.05)
        os.kill(secondary.proc.pid, signal.SIGCONT)
    with pytest.raises(OSError) as exc:                      # the secondary's mount is read-only
        (sdir / "app-write").write_text("refused")
    assert exc.value.errno == errno.EROFS
    time.sleep(1.1)                                          # its attribute cache (1 s) has expired
    assert (sdir / "dir/d2/inner").read_bytes() == b"deep"  # reads work
    counters = primary.stats()
    assert counters["attached"] == 1 and counters["diverged"] == 0
    assert counters["acks"] == counters["ops_sent"]

    expected = tree(pdir, file_times=True)
    assert primary.stop() == 0
    assert secondary.stop() == 0
    assert tree(sdir, file_times=True) == expected


def paused(proc: subprocess.Popen) -> contextlib.AbstractContextManager[None]:
    """The process stopped (SIGSTOP) for the block, continued after it whatever happens."""
    @contextlib.contextmanager
    def pause() -> Iterator[None]:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    return pause()


def test_close_waits_until_the_secondary_applied(rfs, base: Path):
    port = free_port()
    secondary = rfs("secondary", "sec", "--listen", f"127.0.0.1:{port}", "--insecure")
    primary = rfs("primary", "pri")
    assert primary.cmd(f"attach 127.0.0.1 {port}") == "ok"
    (base / "pri" / "f").write_bytes(b"")
    fd = os.open(base / "pri" / "f", os.O_WRONLY)
    os.write(fd, b"buffered")                                # queued: returns at once
    with paused(secondary.proc):
        closing = ThreadPoolExecutor(1).submit(os.close, fd)
        time.sleep(0.3)
        assert not closing.done()                            # close waits for the secondary
    closing.result(timeout=10)
    assert (base / "sec" / "f").read_bytes() == b"buffered"
    counters = primary.stats()
    assert counters["closes"] == 2 and counters["syncs"] == 0   # applied there, not made durable
    fd = os.open(base / "pri" / "s", os.O_CREAT | os.O_WRONLY | os.O_SYNC, 0o644)
    os.write(fd, b"synchronous")
    os.close(fd)
    assert primary.stats()["syncs"] == 2                     # the write and the close: durable


def test_full_sync_reports_a_detach(rfs, base: Path):
    port = free_port()
    secondary = rfs("secondary", "sec", "--listen", f"127.0.0.1:{port}", "--insecure", "--xattr")
    for i in range(20):
        (base / "pri").mkdir(exist_ok=True)
        (base / "pri" / f"f{i}").write_bytes(b"x" * 1000)
    primary = rfs("primary", "pri", "--xattr")
    assert primary.cmd(f"attach 127.0.0.1 {port}") == "ok"
    with paused(secondary.proc):
        syncing = ThreadPoolExecutor(1).submit(primary.cmd, "fullsync")
        deadline = time.monotonic() + 10
        while primary.stats()["sync_state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert primary.cmd("fullsync") == "error fullsync: a synchronisation is running already"
        assert primary.cmd("detach") == "ok"
        assert syncing.result(timeout=10) == "error the secondary was detached during the full sync"
    assert primary.stats()["sync_state"] == "failed"
    # Attached again, it runs to the end.
    assert primary.cmd(f"attach 127.0.0.1 {port}") == "ok"
    assert primary.cmd("fullsync").startswith("ok files=")
    assert tree(base / "sec", file_times=True) == tree(base / "pri", file_times=True)
