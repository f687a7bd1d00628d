"""Host-side plumbing of the simulated cluster: commands, links, cgroups, mounts, processes.

Every failure becomes a HakitError that names the step and carries the command's stderr:
the harness drives the real kernel as root, and "exit status 2" alone never says which
of fifty steps went wrong.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from hakit.errors import HakitError
from hakit.testing.sim_ns import mounts

NETNS_DIR = Path("/run/netns")
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)


def tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " / ".join(kept) if kept else "(no output)"


@contextlib.contextmanager
def os_errors(step: str) -> Iterator[None]:
    """Turn a file-system failure of a step into a HakitError that names the step."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise HakitError(f"{step}: {exc.strerror or exc}{where}") from None


def run(
    step: str,
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run a host command; with check, a failure raises HakitError naming the step."""
    try:
        proc = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise HakitError(f"{step}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise HakitError(f"{step}: `{shlex.join(argv)}` did not finish in {timeout:g}s") from None
    if check and proc.returncode != 0:
        raise HakitError(f"{step} failed: `{shlex.join(argv)}`: {tail(proc.stderr or proc.stdout)}")
    return proc


def ip_batch(step: str, commands: Sequence[str], netns: str | None = None) -> None:
    """Several `ip` commands in one process; ip stops at the first failing line."""
    if not commands:
        return
    argv = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    try:
        run(step, argv, input="\n".join(commands) + "\n")
    except HakitError as exc:
        raise HakitError(f"{exc} (commands: {'; '.join(commands)})") from None


def links() -> list[str]:
    out = run("list network links", ["ip", "-j", "link", "show"]).stdout
    return [entry["ifname"] for entry in json.loads(out or "[]")]


def host_networks() -> list[str]:
    """Every IPv4 prefix the host routes or owns, as text, for address allocation."""
    nets: list[str] = []
    routes = json.loads(
        run("list routes", ["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"
    )
    nets.extend(r["dst"] for r in routes if r.get("dst") and r["dst"] != "default")
    addrs = json.loads(run("list addresses", ["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    for link in addrs:
        for a in link.get("addr_info", []):
            nets.append(f"{a['local']}/{a['prefixlen']}")
    return nets


NEIGH_SYSCTL = Path("/proc/sys/net/ipv4/neigh/default")


def neighbour_room(entries: int) -> None:
    """Make the kernel's ARP table hold `entries`: it is one table for every network
    namespace of the host (gc_thresh3 entries in all, 1,024 by default), and a simulated
    cluster of N nodes fills N x N of it with its heartbeats; past the limit a node cannot
    resolve a new neighbour ("neighbor table overflow!") and its replies are lost.  Only
    raised, never lowered: other namespaces of the host share the table."""
    for name, want in (("gc_thresh2", entries), ("gc_thresh3", 2 * entries)):
        path = NEIGH_SYSCTL / name
        with os_errors(f"raise net.ipv4.neigh.default.{name}"):
            if int(path.read_text()) < want:
                path.write_text(f"{want}\n")


def netns_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def nft_bridge_tables() -> list[str]:
    out = run("list nftables tables", ["nft", "list", "tables", "bridge"]).stdout
    return [line.split()[2] for line in out.splitlines() if line.startswith("table bridge ")]


def nft_replace_table(table: str, body: str | None) -> None:
    """Atomically replace (or, with body None, remove) a bridge-family table.

    Declaring the table before deleting it makes the transaction succeed whether or
    not the table exists, so callers need not look first.
    """
    script = f"table bridge {table} {{}}\ndelete table bridge {table}\n"
    if body is not None:
        script += f"table bridge {table} {{\n{body}}}\n"
    run(f"write nftables table {table}", ["nft", "-f", "-"], input=script)


# -- cgroups


def cgroup2_root() -> Path:
    """Where cgroup2 is mounted: /sys/fs/cgroup/unified on hybrid hosts, else /sys/fs/cgroup."""
    for target, fstype in mounts():
        if fstype == "cgroup2":
            return Path(target)
    raise HakitError("cgroup2 is not mounted on this host (the harness needs cgroup.kill)")


def _cgroup_events(path: Path) -> dict[str, str]:
    try:
        text = (path / "cgroup.events").read_text()
    except FileNotFoundError:
        return {}
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


def _wait_event(path: Path, key: str, value: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while _cgroup_events(path).get(key, value) != value:
        if time.monotonic() > deadline:
            raise HakitError(f"{what}: {path} still has {key} != {value} after {timeout:g}s")
        time.sleep(0.01)


def cgroup_kill(path: Path, timeout: float = 10.0) -> None:
    """SIGKILL every process in the cgroup and below it, and wait until they are gone."""
    if not path.is_dir():
        return
    try:
        (path / "cgroup.kill").write_text("1")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise HakitError(f"cannot kill the processes of {path}: {exc.strerror}") from None
    _wait_event(path, "populated", "0", timeout, "kill")
    # A frozen cgroup stays frozen after its processes died; the next process to
    # join it (a revived node) must not start frozen.
    cgroup_freeze(path, False)


def cgroup_freeze(path: Path, frozen: bool, timeout: float = 10.0) -> None:
    want = "1" if frozen else "0"
    try:
        (path / "cgroup.freeze").write_text(want)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise HakitError(f"cannot {'freeze' if frozen else 'thaw'} {path}: {exc.strerror}") from None
    _wait_event(path, "frozen", want, timeout, "freeze" if frozen else "thaw")


def cgroup_remove(path: Path) -> None:
    """Remove a cgroup and the children its processes may have created, deepest first."""
    if not path.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise HakitError(f"cannot remove cgroup {dirpath}: {exc.strerror}") from None


# -- mounts


def mounts_under(dirs: Iterable[Path]) -> list[str]:
    """Mount points at or below any of dirs, deepest (most recent) first."""
    prefixes = [str(d).rstrip("/") for d in dirs]
    found = [
        target for target, _ in mounts() if any(target == p or target.startswith(p + "/") for p in prefixes)
    ]
    return list(reversed(found))


def umount(target: str) -> None:
    if _libc.umount2(target.encode(), 0) == 0:
        return
    err = ctypes.get_errno()
    if err == 22:  # EINVAL: not a mount point (any more)
        return
    # Busy: something still holds a file open in it; detach so the tree can go.
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err != 22:
            raise HakitError(f"cannot unmount {target}: {os.strerror(err)}")


def bind_private(directory: Path) -> None:
    """Make directory a private bind mount of itself (as `ip netns` does for /run/netns).

    Namespace pins can only be bind-mounted where the mount does not propagate, or the
    kernel would have to copy a namespace into itself.
    """
    if str(directory) not in {target for target, _ in mounts()}:
        run("bind the namespace pin directory", ["mount", "--bind", str(directory), str(directory)])
    run("make the namespace pin directory private", ["mount", "--make-private", str(directory)])


# -- processes


def process_start(pid: int) -> int | None:
    """Start time of a live process (clock ticks since boot), None if gone or a zombie.

    A pid with its start time names one process even after the pid is reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None) -> bool:
    if pid is None:
        return False
    now = process_start(pid)
    return now is not None and (start is None or now == start)


def remove_tree(path: Path) -> None:
    """rm -rf, refused while anything is mounted below (the bind sources live here)."""
    if not path.exists():
        return
    left = mounts_under([path])
    if left:
        raise HakitError(f"refusing to remove {path}: still mounted: {', '.join(left)}")
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise HakitError(f"cannot remove {exc.filename or path}: {exc.strerror}") from None
