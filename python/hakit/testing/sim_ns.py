"""The part of the simulated cluster that runs inside a node's namespaces.

Run as a script (``python -I -S sim_ns.py ...``) and standalone, importing nothing from
hakit: it is on the path of every ``sim exec``, where a bare interpreter starts several
times faster than one that imports the package, and setns() into a mount namespace only
works while the process is still single-threaded.

    sim_ns.py init SPEC_JSON
        Called by the harness right after ``unshare --mount --uts`` inside the node's
        network namespace: sets the host name, drops the namespace pins copied from the
        host, bind-mounts the node's directories onto the standard paths and mounts a
        sysfs that shows the node's own links.
    sim_ns.py enter CGROUP NETNS MNTNS UTSNS [--log FILE] -- ARGV...
        Joins the node (cgroup first, so that nothing it starts escapes cgroup.kill),
        then execs ARGV. With --log, forks a detached child whose output is appended to
        FILE (a path as the node sees it) and prints the child's pid.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MNT_DETACH = 0x2

# Exit statuses in the convention of container runtimes, so that a caller can tell
# "could not get into the node" from the command's own failure.
EXIT_ENTER = 125
EXIT_NOEXEC = 126
EXIT_NOTFOUND = 127

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    src = source.encode() if source is not None else None
    fs = fstype.encode() if fstype is not None else None
    _check(_libc.mount(src, target.encode(), fs, ctypes.c_ulong(flags), None), f"mount {target}")


def _umount_detach(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def _setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, nstype), f"setns {path}")
    finally:
        os.close(fd)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of the calling process's namespace, in mount order."""
    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            result.append((_unescape(left.split()[4]), right.split()[0]))
    return result


def init(hostname: str, binds: list[list[str]], sysfs_staging: str, detach_under: list[str]) -> None:
    name = hostname.encode()
    _check(_libc.sethostname(name, len(name)), "sethostname")
    mounts_now = mounts()
    # Parents before children, so a path nested in another lands on the node's copy.
    # Before the detaching below: a node's path may be a file system of its own mounted
    # under the harness's data directory (up(sizes=...)), which the bind keeps.
    for src, dst in sorted(binds, key=lambda b: b[1].rstrip("/").count("/")):
        os.makedirs(dst, exist_ok=True)
        _mount(src, dst, None, MS_BIND)
    # The new namespace is a copy of the host's, including the mounts that pin other
    # namespaces (/run/netns, other nodes' and other harnesses' pins): the copies would
    # keep those alive as long as this node lives.
    under = [d.rstrip("/") for d in detach_under]
    for target, fstype in reversed(mounts_now):
        if fstype == "nsfs" or any(target == d or target.startswith(d + "/") for d in under):
            try:
                _umount_detach(target)
            except OSError as exc:
                # Already gone with a parent detached before it.
                if exc.errno != errno.EINVAL:
                    raise
    # sysfs shows the links of the netns of whoever mounts it: mount a fresh one aside,
    # carry the host's cgroup tree over (the node's processes live in it), swap it in.
    os.makedirs(sysfs_staging, exist_ok=True)
    _mount("sysfs", sysfs_staging, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if any(target == "/sys/fs/cgroup" for target, _ in mounts_now):
        _mount("/sys/fs/cgroup", sysfs_staging + "/fs/cgroup", None, MS_BIND | MS_REC)
    _umount_detach("/sys")
    _mount(sysfs_staging, "/sys", None, MS_MOVE)


def enter(cgroup: str, netns: str, mntns: str, utsns: str) -> None:
    # The cgroup first, so that nothing this process becomes escapes cgroup.kill, and
    # by its host path, before the mount namespace changes what paths mean.
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    _setns(netns, CLONE_NEWNET)
    _setns(utsns, CLONE_NEWUTS)
    _setns(mntns, CLONE_NEWNS)
    os.chdir("/")


def _exec(argv: list[str]) -> int:
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        print(f"{argv[0]}: command not found", file=sys.stderr)
        return EXIT_NOTFOUND
    except OSError as exc:
        print(f"{argv[0]}: {exc.strerror}", file=sys.stderr)
        return EXIT_NOEXEC


def _detach(log: str, argv: list[str]) -> int:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        return 0
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os._exit(_exec(argv))


def main(args: list[str]) -> int:
    node = os.environ.get("HAKIT_NODE", "node")
    if args[:1] == ["init"] and len(args) == 2:
        try:
            init(**json.loads(args[1]))
        except OSError as exc:
            print(f"cannot set up {node}: {exc}", file=sys.stderr)
            return EXIT_ENTER
        return 0
    if args[:1] == ["enter"] and "--" in args:
        sep = args.index("--")
        head, argv = args[1:sep], args[sep + 1 :]
        log = None
        if len(head) == 6 and head[4] == "--log":
            log = head[5]
            head = head[:4]
        if len(head) == 4 and argv:
            try:
                enter(*head)
            except OSError as exc:
                print(f"cannot enter {node}: {exc}", file=sys.stderr)
                return EXIT_ENTER
            if not log:
                return _exec(argv)
            try:
                return _detach(log, argv)
            except OSError as exc:
                print(f"cannot start in {node}: {exc}", file=sys.stderr)
                return EXIT_ENTER
    print(
        "usage: sim_ns.py init SPEC | enter CGROUP NETNS MNTNS UTSNS [--log FILE] -- ARGV...", file=sys.stderr
    )
    return EXIT_ENTER


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
