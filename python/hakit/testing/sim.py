"""Simulated cluster: several hakit nodes on one machine, each with its own network and files.

A node is a network namespace (one veth per LAN, each LAN a bridge on the host) plus a
persistent mount namespace in which the node's own directories are bind-mounted onto
the standard paths, so every node sees /etc/hakit, /var/lib/hakit, ... with its own
contents, and a UTS namespace whose host name is the node's name.  Every process started
in a node joins the node's cgroup, so a crash is one write to cgroup.kill.

Everything a harness NAME creates carries NAME, so two harnesses never touch each other's
objects and `down` finds all of them by name, even after a crash lost the state file:

    /run/hakit-sim/NAME/state.json                what was asked for, what happened since
    /run/hakit-sim/NAME/ns/nodeI.{mnt,uts}        namespace pins (in a private bind mount)
    /var/lib/hakit-sim/NAME/nodeI/                the node's disk: etc/ lib/ log/ run/ paths/
    /run/netns/hksim-NAME-nodeI                   the node's network namespace
    hkbNAME-K                                     bridge of LAN K (0-based)
    hkvNAME-I-K                                   host end of node I's veth on LAN K (ethK inside)
    <cgroup2>/hakit-sim-NAME/nodeI                the node's cgroup
    nft table bridge hakit_sim_NAME               link cuts

Addresses: one 10.X.0.0/16 block per harness; X starts from a hash of NAME and moves on
past blocks of other harnesses and blocks overlapping a host route or address.  LAN K is
10.X.K.0/24, node I is 10.X.K.(10+I), the host is 10.X.K.254; 10.X.K.201-253 are never
given to a node (spare_addr(), for virtual IPs).  MACs spell the address: 02:00:0a:X:K:I.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import ipaddress
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.etree import ElementTree as ET

from hakit.check.proc_events import NETNS_ENV as PROC_NETNS_ENV
from hakit.errors import HakitError
from hakit.paths import ROOT_ENV, Paths
from hakit.testing import sim_host as host

DEFAULT_NAME = "sim"
# 7 characters keep "hkv" + NAME + "-32-7" within the kernel's 15-character link names.
NAME_RE = re.compile(r"[a-z][a-z0-9]{0,6}")
MAX_NODES = 32
MAX_LANS = 8

STATE_ROOT = Path("/run/hakit-sim")
DATA_ROOT = Path("/var/lib/hakit-sim")
SIM_NS = Path(__file__).with_name("sim_ns.py")

OCTETS = range(100, 250)
NODE_OFFSET = 10
HOST_LAST = 254
NEIGH_MARGIN = 1024  # ARP entries left to the host's other namespaces (sim_host.neighbour_room)

# (node subdirectory, path inside the node)
STANDARD_DIRS = (
    ("etc", "/etc/hakit"),
    ("lib", "/var/lib/hakit"),
    ("log", "/var/log/hakit"),
    ("run", "/run/hakit"),
)
DAEMON_MODULE = "hakit.node.daemon"
DAEMON_LOG = "/var/log/hakit/hakitd.out"
# hakitd is ready once it answers on its socket; `up` waits for that, so that what
# follows can talk to it.  Another daemon (daemon_argv) is only watched for this long
# for an early death (an import error), which is better reported by `up` than later.
DAEMON_READY_TIMEOUT = 30.0
DAEMON_GRACE = 1.0
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def lan_name(k: int) -> str:
    """SafeKit's names: the first LAN is "default", the second "private"."""
    return ("default", "private")[k] if k < 2 else f"lan{k + 1}"


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise HakitError(
            f"bad simulated cluster name {name!r}: 1 to 7 lowercase letters or digits, "
            "starting with a letter (it goes into network interface names)"
        )


def _require_root() -> None:
    if os.geteuid() != 0:
        raise HakitError("the simulated cluster needs root (namespaces, bridges, mounts, cgroups)")


def _check_paths(paths: Iterable[str]) -> list[str]:
    """Extra per-node paths: absolute, not a pseudo file system, not above the harness's own dirs."""
    result: list[str] = []
    standard = {dst for _, dst in STANDARD_DIRS}
    for raw in paths:
        p = os.path.normpath(raw)
        if not os.path.isabs(p) or p == "/":
            raise HakitError(f"per-node path {raw!r} must be an absolute directory other than /")
        if any(p == top or p.startswith(top + "/") for top in ("/proc", "/sys", "/dev", "/run/netns")):
            raise HakitError(f"per-node path {raw!r} is in a kernel file system")
        # Binding over (an ancestor of) the harness's own dirs or the interpreter would
        # hide what the node needs to start.
        for own in (str(STATE_ROOT), str(DATA_ROOT), str(SIM_NS.parent), sys.prefix):
            if own == p or own.startswith(p + "/"):
                raise HakitError(f"per-node path {raw!r} would hide {own}")
        if any(p.startswith(f"{own}/") for own in (str(STATE_ROOT), str(DATA_ROOT))):
            raise HakitError(f"per-node path {raw!r} is inside the harness's own directories")
        if p in standard or p in result:
            raise HakitError(f"per-node path {raw!r} is given twice (the standard paths are always per node)")
        result.append(p)
    return result


class _Lock:
    """One lock for every change to any harness, across processes (flock) and threads.

    Re-entrant because the sweeper holds it while it calls down().  One lock for all
    harnesses keeps address allocation and sweeping simple; every change is short.
    """

    def __init__(self) -> None:
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd = -1

    def __enter__(self) -> None:
        self._rlock.acquire()
        if self._depth == 0:
            try:
                STATE_ROOT.mkdir(parents=True, exist_ok=True)
                fd = os.open(STATE_ROOT / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                self._rlock.release()
                raise HakitError(f"cannot lock {STATE_ROOT}: {exc.strerror}") from None
            self._fd = fd
        self._depth += 1

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._depth -= 1
        if self._depth == 0:
            os.close(self._fd)
        self._rlock.release()


_LOCK = _Lock()


@dataclass
class NodeState:
    killed: bool = False
    frozen: bool = False
    daemon_pid: int | None = None
    daemon_start: int | None = None  # with the pid, names the process even after pid reuse
    daemon_error: str | None = None
    clock: int = 0  # seconds the node's wall clock is off (set_clock)


@dataclass
class State:
    name: str
    nodes: int
    lans: int
    octet: int
    paths: list[str]
    daemon_argv: list[str] | None  # None: made with --no-daemon
    sizes: dict[str, str] = field(default_factory=dict)  # per-node path -> size of its own tmpfs
    shared: dict[str, str] = field(default_factory=dict)  # path in every node -> host directory
    owner_pid: int | None = None
    owner_start: int | None = None
    cuts: list[list[str]] = field(default_factory=list)
    node: dict[str, NodeState] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> State:
        data = json.loads(text)
        data["node"] = {n: NodeState(**s) for n, s in data["node"].items()}
        return cls(**data)

    def to_json(self) -> str:
        data = asdict(self)
        if not data["shared"]:
            del data["shared"]  # (as clock below)
        for node in data["node"].values():
            # Written only when set: an older harness on the same machine (another checkout)
            # cannot read a field it does not know, takes the cluster for abandoned, sweeps it.
            if not node["clock"]:
                del node["clock"]
        return json.dumps(data, indent=2) + "\n"

    @property
    def node_names(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.nodes + 1)]

    def stale(self) -> bool:
        """Made for a process (a test run) that is gone."""
        return self.owner_pid is not None and not host.alive(self.owner_pid, self.owner_start)


@dataclass(frozen=True)
class LanStatus:
    name: str
    bridge: str
    subnet: str
    host_addr: str


@dataclass(frozen=True)
class NodeStatus:
    name: str
    state: str  # up | killed | frozen
    addrs: tuple[str, ...]  # one per LAN, in LAN order
    daemon: str  # off | running | exited | stopped | failed: <why>
    daemon_pid: int | None
    netns: str
    dir: str  # the node's disk on the host
    daemon_log: str  # host path of the daemon's stdout/stderr


@dataclass(frozen=True)
class SimStatus:
    name: str
    lans: tuple[LanStatus, ...]
    nodes: tuple[NodeStatus, ...]
    paths: tuple[str, ...]
    cuts: tuple[tuple[str, str], ...]
    owner_pid: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sim:
    """One simulated cluster, named; every method re-reads the state, so several
    processes (a test and `hakit sim` in a shell) can drive the same harness."""

    def __init__(self, name: str = DEFAULT_NAME) -> None:
        check_name(name)
        self.name = name
        self.state_dir = STATE_ROOT / name
        self.data_dir = DATA_ROOT / name
        self._state_file = self.state_dir / "state.json"
        self._ns_dir = self.state_dir / "ns"

    def __repr__(self) -> str:
        return f"Sim({self.name!r})"

    # -- names of what the harness creates

    @property
    def table(self) -> str:
        return f"hakit_sim_{self.name}"

    @property
    def cgroup(self) -> Path:
        return host.cgroup2_root() / f"hakit-sim-{self.name}"

    def netns(self, node: str) -> str:
        return f"hksim-{self.name}-{node}"

    def bridge(self, lan: int) -> str:
        return f"hkb{self.name}-{lan}"

    def veth(self, index: int, lan: int) -> str:
        return f"hkv{self.name}-{index}-{lan}"

    @property
    def _host_netns_pin(self) -> Path:
        """hakit-checks: see _build_node; its path is the same inside every node."""
        return self._ns_dir / "host.net"

    def _pin(self, node: str, kind: str) -> Path:
        return self._ns_dir / f"{node}.{kind}"

    def _owns_link(self, ifname: str) -> bool:
        return re.fullmatch(rf"hk[bv]{self.name}-\d+(-\d+)?", ifname) is not None

    def _owns_netns(self, netns: str) -> bool:
        return re.fullmatch(rf"hksim-{self.name}-node\d+", netns) is not None

    # -- state

    def exists(self) -> bool:
        return self._state_file.exists()

    def _load(self) -> State:
        try:
            return State.from_json(self._state_file.read_text())
        except FileNotFoundError:
            others = ", ".join(Sim.names()) or "none"
            raise HakitError(
                f"no simulated cluster named {self.name!r} (running: {others}; "
                f"create it with: hakit sim up --name {self.name})"
            ) from None
        except OSError as exc:
            raise HakitError(f"cannot read {self._state_file}: {exc.strerror}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise HakitError(
                f"state file {self._state_file} is damaged ({exc}); remove the "
                f"cluster with: hakit sim down --name {self.name}"
            ) from None

    def _load_or_none(self) -> State | None:
        try:
            return State.from_json(self._state_file.read_text())
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def _save(self, st: State) -> None:
        with host.os_errors(f"write {self._state_file}"):
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_text(st.to_json())
            tmp.replace(self._state_file)

    @staticmethod
    def _index(st: State, node: str) -> int:
        if node not in st.node_names:
            raise HakitError(
                f"no node {node!r} in simulated cluster {st.name!r} (nodes: {', '.join(st.node_names)})"
            )
        return int(node[4:])

    # -- addresses and files

    @staticmethod
    def _check_lan(st: State, lan: int) -> None:
        if not 0 <= lan < st.lans:
            raise HakitError(f"simulated cluster {st.name!r} has LANs 0..{st.lans - 1}, not {lan}")

    def nodes(self) -> list[str]:
        return self._load().node_names

    def subnet(self, lan: int = 0) -> str:
        st = self._load()
        self._check_lan(st, lan)
        return f"10.{st.octet}.{lan}.0/24"

    def addr(self, node: str, lan: int = 0) -> str:
        st = self._load()
        self._check_lan(st, lan)
        return f"10.{st.octet}.{lan}.{NODE_OFFSET + self._index(st, node)}"

    def host_addr(self, lan: int = 0) -> str:
        st = self._load()
        self._check_lan(st, lan)
        return f"10.{st.octet}.{lan}.{HOST_LAST}"

    def spare_addr(self, lan: int = 0, n: int = 1) -> str:
        """An address on the LAN that no node or host has: for virtual IPs (n = 1..53)."""
        st = self._load()
        self._check_lan(st, lan)
        if not 1 <= n <= HOST_LAST - 201:
            raise HakitError(f"spare address number {n} out of range 1..{HOST_LAST - 201}")
        return f"10.{st.octet}.{lan}.{200 + n}"

    def node_dir(self, node: str) -> Path:
        self._index(self._load(), node)
        return self.data_dir / node

    def paths(self, node: str) -> Paths:
        """hakit's standard paths of the node, as the host sees them."""
        self._index(self._load(), node)
        return self._host_paths(node)

    def _host_paths(self, node: str) -> Paths:
        d = self.data_dir / node
        return Paths(etc=d / "etc", lib=d / "lib", log=d / "log", run=d / "run")

    def _binds(self, st: State, node: str) -> list[tuple[Path, str]]:
        d = self.data_dir / node
        return [(d / sub, dst) for sub, dst in STANDARD_DIRS] + [
            (d / "paths" / p.lstrip("/"), p) for p in st.paths
        ] + [(Path(src), dst) for dst, src in st.shared.items()]

    def _node_path(self, st: State, node: str, path: str) -> Path:
        return self._binds(st, node)[len(STANDARD_DIRS) + st.paths.index(path)][0]

    def remount(self, node: str, path: str, mode: str) -> None:
        """The node's own file system at `path` (up(sizes=...)) becomes read-only ("ro")
        or writable again ("rw"), for every process on the node."""
        st = self._load()
        if path not in st.sizes:
            raise HakitError(f"{path} has no file system of its own on the nodes (up(sizes=...))")
        if mode not in ("ro", "rw"):
            raise HakitError(f"remount {path}: 'ro' or 'rw', not {mode!r}")
        host.run(f"{node}: remount {path} {mode}",
                 ["mount", "-o", f"remount,{mode}", str(self._node_path(st, node, path))])

    def host_path(self, node: str, path: str) -> Path:
        """Where a file the node sees at `path` lives on the host."""
        st = self._load()
        self._index(st, node)
        p = os.path.normpath(path)
        best: tuple[Path, str] | None = None
        for src, dst in self._binds(st, node):
            if (p == dst or p.startswith(dst + "/")) and (best is None or len(dst) > len(best[1])):
                best = (src, dst)
        if best is None:
            raise HakitError(
                f"{path} is not a per-node path (per-node: "
                f"{', '.join(dst for _, dst in self._binds(st, node))})"
            )
        return best[0] / os.path.relpath(p, best[1])

    # -- life cycle

    def up(
        self,
        nodes: int = 2,
        lans: int = 1,
        daemon: bool = True,
        paths: Sequence[str] = (),
        owner_pid: int | None = None,
        daemon_argv: Sequence[str] | None = None,
        sizes: Mapping[str, str] | None = None,
        shared: Mapping[str, str] | None = None,
    ) -> None:
        """Create and start the cluster.

        A failure while building removes whatever was built.  A daemon that does not
        start raises too, but leaves the cluster up so that its log can be read.
        owner_pid: the process the cluster belongs to (a test run); once it is gone,
        sweep_stale() removes the cluster.  daemon_argv replaces hakitd (benchmarks,
        tests of the harness itself).  sizes: per-node paths (of `paths`) that get a file
        system of their own of that size on every node (a tmpfs, "64M"), to be filled or
        remounted read-only (remount()) as a real disk would be.  shared: paths in every
        node (keys) that show a directory of the host (values), the same one in each: an
        installation of packaged files, as every node of a real cluster has its own.
        """
        _require_root()
        if not 1 <= nodes <= MAX_NODES:
            raise HakitError(f"a simulated cluster has 1 to {MAX_NODES} nodes, not {nodes}")
        if not 1 <= lans <= MAX_LANS:
            raise HakitError(f"a simulated cluster has 1 to {MAX_LANS} LANs, not {lans}")
        extra = _check_paths(paths)
        common = dict(zip(_check_paths([*extra, *(shared or {})])[len(extra):], (shared or {}).values(),
                          strict=True))  # (checked with the per-node paths: none given twice)
        for dst, src in common.items():
            if not os.path.isabs(src) or not os.path.isdir(src):
                raise HakitError(f"shared path {dst!r}: {src!r} is not a directory of the host")
        sized = dict(sizes or {})
        for path, size in sized.items():
            if path not in extra:
                raise HakitError(f"size given for {path!r}, which is not one of the per-node paths")
            if not re.fullmatch(r"[1-9][0-9]*[kKmMgG]?", size):
                raise HakitError(f"size of {path!r}: {size!r} is not a size such as 64M")
        argv = list(daemon_argv) if daemon_argv else [sys.executable, "-m", DAEMON_MODULE]
        with _LOCK:
            if self.exists():
                raise HakitError(
                    f"simulated cluster {self.name!r} already exists "
                    f"(remove it with: hakit sim down --name {self.name})"
                )
            # Traces without a state file are leftovers of a crash: nobody owns them.
            self._teardown()
            st = State(
                name=self.name,
                nodes=nodes,
                lans=lans,
                octet=_allocate_octet(self.name),
                paths=extra,
                sizes=sized,
                shared=common,
                daemon_argv=argv if daemon else None,
                owner_pid=owner_pid,
                owner_start=host.process_start(owner_pid) if owner_pid is not None else None,
                node={f"node{i}": NodeState() for i in range(1, nodes + 1)},
            )
            # State first: from here on, a crash leaves a cluster `down` can find.
            self._save(st)
            try:
                self._build(st)
            except BaseException as exc:
                try:
                    self._teardown()
                except HakitError as cleanup:
                    raise HakitError(f"{exc}; cleaning up also failed: {cleanup}") from None
                raise
            if daemon:
                self._start_daemons(st, st.node_names)

    def _build(self, st: State) -> None:
        with host.os_errors("create the node directories"):
            for node in st.node_names:
                for src, _ in self._binds(st, node):
                    src.mkdir(parents=True, exist_ok=True)
                (self.data_dir / node / "etc" / "cluster.xml").write_text(_cluster_xml(st))
        # Before the namespaces bind them: each node's path is then that file system.
        # Under the data directory, so the teardown unmounts them with the rest.
        for node in st.node_names:
            for path, size in st.sizes.items():
                host.run(f"{node}: a {size} file system for {path}",
                         ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "hakit-sim",
                          str(self._node_path(st, node, path))])
            self._ns_dir.mkdir(parents=True, exist_ok=True)
        self._bootstrap_pki(st)
        host.bind_private(self._ns_dir)
        try:
            self.cgroup.mkdir(exist_ok=True)
            for node in st.node_names:
                (self.cgroup / node).mkdir(exist_ok=True)
        except OSError as exc:
            raise HakitError(f"cannot create cgroup {exc.filename}: {exc.strerror}") from None
        cmds = []
        for k in range(st.lans):
            br = self.bridge(k)
            cmds += [
                f"link add {br} address {_mac(st.octet, k, HOST_LAST)} type bridge",
                f"link set {br} up",
                f"addr add 10.{st.octet}.{k}.{HOST_LAST}/24 dev {br}",
            ]
        host.ip_batch("create the LAN bridges", cmds)
        # Every node resolves every other and the host, on every LAN (and a margin for
        # the other namespaces of the host).
        host.neighbour_room(NEIGH_MARGIN + st.lans * (st.nodes + 1) ** 2)
        for i in range(1, st.nodes + 1):
            self._build_node(st, i)

    def _bootstrap_pki(self, st: State) -> None:
        """One cluster PKI, made the way an operator does it: the CA and secret on node1
        (`hakit cluster config`), a bundle imported on every other node."""
        # Imported here: `hakit sim` commands that do not build a cluster skip the crypto library.
        from hakit.config.loader import load_cluster
        from hakit.node import pki

        first = self._host_paths(st.node_names[0])
        cluster = load_cluster(first.cluster_xml)
        pki.setup_node(first, cluster, st.node_names[0])
        for node in st.node_names[1:]:
            bundle = pki.read_bundle(pki.make_bundle(first, cluster, node), f"bundle of {node}")
            pki.install_bundle(self._host_paths(node), bundle)

    def _build_node(self, st: State, i: int) -> None:
        node = f"node{i}"
        ns = self.netns(node)
        host.run(f"{node}: create its network namespace", ["ip", "netns", "add", ns])
        links = [self._link_cmds(st, i, k) for k in range(st.lans)]
        host.ip_batch(f"{node}: create its links", [c for on_host, _ in links for c in on_host])
        inside = [c for _, cmds in links for c in cmds]
        host.ip_batch(f"{node}: configure its links", ["link set lo up", *inside], netns=ns)
        mnt, uts = self._pin(node, "mnt"), self._pin(node, "uts")
        with host.os_errors(f"{node}: create its namespace pins"):
            mnt.touch()
            uts.touch()
        spec = {
            "hostname": node,
            "binds": [[str(src), dst] for src, dst in self._binds(st, node)],
            "sysfs_staging": str(self.data_dir / node / ".sysfs"),
            "detach_under": [str(STATE_ROOT), str(DATA_ROOT)],
        }
        host.run(
            f"{node}: set up its mount namespace",
            [
                "nsenter",
                f"--net={host.NETNS_DIR / ns}",
                "--",
                "unshare",
                f"--mount={mnt}",
                f"--uts={uts}",
                "--propagation",
                "private",
                "--",
                sys.executable,
                "-I",
                "-S",
                str(SIM_NS),
                "init",
                json.dumps(spec),
            ],
        )
        # hakit-checks: the kernel's process-event connector (errd) answers in the host's
        # network namespace only.  Node processes reach it through this file: the host's
        # netns bound inside the node's mount namespace (init drops every nsfs mount it
        # inherits, and nothing propagates into it), gone with that namespace.
        with host.os_errors(f"{node}: create the host network namespace pin"):
            self._host_netns_pin.touch()
        host.run(
            f"{node}: pin the host's network namespace for process events",
            ["nsenter", f"--mount={mnt}", "--", "mount", "--bind", "/proc/self/ns/net",
             str(self._host_netns_pin)],
        )

    def _link_cmds(self, st: State, i: int, k: int) -> tuple[list[str], list[str]]:
        """`ip` commands making node I's ethK: on the host, then inside the node."""
        veth, ns, mac = self.veth(i, k), self.netns(f"node{i}"), _mac(st.octet, k, NODE_OFFSET + i)
        return (
            [f"link add {veth} type veth peer name eth{k} address {mac} netns {ns}",
             f"link set {veth} master {self.bridge(k)} up"],
            [f"addr add 10.{st.octet}.{k}.{NODE_OFFSET + i}/24 dev eth{k}", f"link set eth{k} up"],
        )

    def _teardown_node(self, st: State, i: int) -> None:
        node = f"node{i}"
        present = set(host.links())
        host.ip_batch(
            f"{node}: delete its links",
            [f"link del {self.veth(i, k)}" for k in range(st.lans) if self.veth(i, k) in present],
        )
        for kind in ("mnt", "uts"):
            host.umount(str(self._pin(node, kind)))
        if self.netns(node) in host.netns_names():
            host.run(f"{node}: delete its network namespace", ["ip", "netns", "del", self.netns(node)])

    # -- the node daemon

    def _start_daemons(self, st: State, nodes: Sequence[str]) -> None:
        argv = st.daemon_argv
        if argv is None:
            return
        module_form = argv[1:3] == ["-m", DAEMON_MODULE]
        # hakitd of this installation (-m), or one of a package (its launcher).
        hakitd = module_form or os.path.basename(argv[0]) == "hakitd"
        missing = _hakitd_missing() if module_form else None
        for node in nodes:
            ns = st.node[node]
            ns.daemon_pid = ns.daemon_start = None
            ns.daemon_error = missing
            if missing:
                continue
            try:
                proc = subprocess.run(
                    self._enter_argv(node, log=DAEMON_LOG) + argv,
                    env=self._env(st, node),
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                ns.daemon_error = "could not be started: the launcher hung"
                continue
            if proc.returncode != 0 or not proc.stdout.strip().isdigit():
                ns.daemon_error = f"could not be started: {host.tail(proc.stderr)}"
                continue
            ns.daemon_pid = int(proc.stdout)
            ns.daemon_start = host.process_start(ns.daemon_pid)
        self._save(st)
        pending = {n for n in nodes if st.node[n].daemon_pid is not None}
        deadline = time.monotonic() + (DAEMON_READY_TIMEOUT if hakitd else DAEMON_GRACE)
        while pending and time.monotonic() < deadline:
            time.sleep(0.05)
            for node in sorted(pending):
                ns = st.node[node]
                if not host.alive(ns.daemon_pid, ns.daemon_start):
                    log = self.data_dir / node / "log" / "hakitd.out"
                    ns.daemon_error = f"exited at once; {log}: {host.tail(_read(log), 3)}"
                    pending.discard(node)
                elif self._host_paths(node).daemon_socket.exists():
                    pending.discard(node)
        if hakitd:
            for node in pending:
                st.node[node].daemon_error = (
                    f"is running but did not open {self._host_paths(node).daemon_socket} "
                    f"in {DAEMON_READY_TIMEOUT:g}s"
                )
        self._save(st)
        failed = [f"{n}: daemon {st.node[n].daemon_error}" for n in nodes if st.node[n].daemon_error]
        if failed:
            raise HakitError(
                "; ".join(failed) + f" (the cluster is up; remove it with: hakit sim down --name {self.name})"
            )

    # -- processes in a node

    def _env(self, st: State, node: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        # Inside a node the standard paths are the node's own.
        env.pop(ROOT_ENV, None)
        if env.get("PYTHONPATH"):
            # Node processes start in /, where a relative entry would point elsewhere.
            env["PYTHONPATH"] = os.pathsep.join(
                os.path.abspath(p) if p else p for p in env["PYTHONPATH"].split(os.pathsep)
            )
        # The hakit commands of this installation, whether or not its venv is activated.
        bindir = os.path.dirname(sys.executable)
        if bindir not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
        env["HAKIT_NODE"] = node
        env["HAKIT_SIM"] = self.name
        env[PROC_NETNS_ENV] = str(self._host_netns_pin)  # hakit-checks: see _build_node
        if st.node[node].clock:
            # Namespaces cannot move the wall clock (time namespaces offset only the
            # monotonic ones): libfaketime does, for every process of the node.
            env["LD_PRELOAD"] = FAKETIME_LIB
            env["FAKETIME"] = f"{st.node[node].clock:+d}"
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        env.update(extra or {})
        return env

    def _enter_argv(self, node: str, log: str | None = None) -> list[str]:
        return [
            sys.executable,
            "-I",
            "-S",
            str(SIM_NS),
            "enter",
            str(self.cgroup / node),
            str(host.NETNS_DIR / self.netns(node)),
            str(self._pin(node, "mnt")),
            str(self._pin(node, "uts")),
            *(["--log", log] if log else []),
            "--",
        ]

    def command(
        self, node: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """argv and environment that run argv inside the node, for callers that spawn it
        themselves (`hakit sim exec` execs it)."""
        st = self._load()
        self._index(st, node)
        if st.node[node].frozen:
            # Joining a frozen cgroup would freeze the new process too.
            raise HakitError(f"{node} is frozen (hakit sim thaw {node} --name {self.name})")
        if not argv:
            raise HakitError("no command to run")
        return self._enter_argv(node) + list(argv), self._env(st, node, env)

    def exec(
        self,
        node: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        capture: bool = True,
        timeout: float | None = 60.0,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the node and wait; with check, a non-zero exit raises HakitError."""
        cmd, full_env = self.command(node, argv, env)
        try:
            proc = subprocess.run(
                cmd,
                env=full_env,
                input=input,
                capture_output=capture,
                encoding="utf-8",
                errors="replace",  # a command's binary output must not become a traceback
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HakitError(f"{node}: `{shlex.join(argv)}` did not finish in {timeout}s") from None
        if check and proc.returncode != 0:
            detail = f": {host.tail(proc.stderr or proc.stdout)}" if capture else ""
            raise HakitError(f"{node}: `{shlex.join(argv)}` exited with status {proc.returncode}{detail}")
        return proc

    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a long-running process in the node, in /; the caller waits for it.

        kw go to subprocess.Popen, except kw["env"], which adds to the node's
        environment instead of replacing it.
        """
        cmd, env = self.command(node, argv, kw.pop("env", None))
        return subprocess.Popen(cmd, env=env, **kw)

    # -- breaking things

    def kill(self, node: str) -> None:
        """Crash the node: SIGKILL all its processes, all its links down on both ends."""
        _require_root()
        with _LOCK:
            st = self._load()
            i = self._index(st, node)
            host.cgroup_kill(self.cgroup / node)
            host.ip_batch(
                f"{node}: take its links down (host side)",
                [f"link set {self.veth(i, k)} down" for k in range(st.lans)],
            )
            host.ip_batch(
                f"{node}: take its links down",
                [f"link set eth{k} down" for k in range(st.lans)],
                netns=self.netns(node),
            )
            ns = st.node[node]
            ns.killed, ns.frozen = True, False
            ns.daemon_pid = ns.daemon_start = None
            ns.daemon_error = None
            self._save(st)

    def revive(self, node: str) -> None:
        """Boot a killed node again: fresh namespaces (a reboot loses addresses, mounts,
        eBPF programs), empty /run/hakit, same disk; then its daemon."""
        _require_root()
        with _LOCK:
            st = self._load()
            i = self._index(st, node)
            if not st.node[node].killed:
                raise HakitError(
                    f"{node} is running; kill it first (hakit sim kill {node} --name {self.name})"
                )
            host.cgroup_kill(self.cgroup / node)
            self._teardown_node(st, i)
            run_dir = self.data_dir / node / "run"
            with host.os_errors(f"{node}: empty its /run/hakit"):
                for entry in list(run_dir.iterdir()) if run_dir.is_dir() else []:
                    if entry.is_dir() and not entry.is_symlink():
                        host.remove_tree(entry)
                    else:
                        entry.unlink()
            self._build_node(st, i)
            st.node[node].killed = False
            self._save(st)
            self._start_daemons(st, [node])

    def unplug(self, node: str, lan: int = 0) -> None:
        """Delete the node's ethLAN (and the host's end of it): a NIC or a container's
        interface removed.  plug() creates it again."""
        _require_root()
        with _LOCK:
            st = self._load()
            self._index(st, node)
            self._check_lan(st, lan)
            host.ip_batch(f"{node}: delete eth{lan}", [f"link del eth{lan}"], netns=self.netns(node))

    def plug(self, node: str, lan: int = 0) -> None:
        """Create the node's ethLAN again, as up() made it: name, MAC, address, bridge."""
        _require_root()
        with _LOCK:
            st = self._load()
            i = self._index(st, node)
            self._check_lan(st, lan)
            on_host, inside = self._link_cmds(st, i, lan)
            host.ip_batch(f"{node}: create eth{lan}", on_host)
            host.ip_batch(f"{node}: configure eth{lan}", inside, netns=self.netns(node))

    def set_clock(self, node: str, offset: int) -> None:
        """Put the node's wall clock `offset` seconds off, for the processes started in it
        from now on (its daemon after revive(), commands): nodes that lost NTP."""
        with _LOCK:
            st = self._load()
            self._index(st, node)
            if offset and not Path(FAKETIME_LIB).exists():
                raise HakitError(f"moving a node's clock needs libfaketime: {FAKETIME_LIB} is missing "
                                 "(apt-get install faketime)")
            st.node[node].clock = offset
            self._save(st)

    def reboot(self, node: str, timeout: float = 120.0) -> None:
        """Reboot the node cleanly: its daemon is stopped as systemd stops hakitd.service at
        shutdown (SIGTERM, then its modules stop and a mirror primary hands over), then the
        node goes down and boots as with kill() and revive()."""
        st = self._load()
        self._index(st, node)
        ns = st.node[node]
        if ns.daemon_pid is not None and host.alive(ns.daemon_pid, ns.daemon_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(ns.daemon_pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while host.alive(ns.daemon_pid, ns.daemon_start):
                if time.monotonic() > deadline:
                    raise HakitError(f"{node}: the daemon did not stop within {timeout:g} s of SIGTERM")
                time.sleep(0.05)
        self.kill(node)
        self.revive(node)

    def freeze(self, node: str) -> None:
        """Hang the node: its processes stop (cgroup.freeze); the kernel still answers pings."""
        self._set_frozen(node, True)

    def thaw(self, node: str) -> None:
        self._set_frozen(node, False)

    def _set_frozen(self, node: str, frozen: bool) -> None:
        _require_root()
        with _LOCK:
            st = self._load()
            self._index(st, node)
            host.cgroup_freeze(self.cgroup / node, frozen)
            st.node[node].frozen = frozen
            self._save(st)

    def cut(self, a: str, b: str) -> None:
        """Drop every frame between nodes a and b, on every LAN (both still reach the host)."""
        _require_root()
        with _LOCK:
            st = self._load()
            self._index(st, a)
            self._index(st, b)
            if a == b:
                raise HakitError(f"cannot cut {a} from itself")
            pair = sorted([a, b])
            if pair not in st.cuts:
                st.cuts.append(pair)
            self._apply_cuts(st)
            self._save(st)

    def heal(self) -> None:
        """Remove every cut."""
        _require_root()
        with _LOCK:
            st = self._load()
            st.cuts = []
            self._apply_cuts(st)
            self._save(st)

    def _apply_cuts(self, st: State) -> None:
        if not st.cuts:
            host.nft_replace_table(self.table, None)
            return
        rules = []
        for a, b in st.cuts:
            ia, ib = self._index(st, a), self._index(st, b)
            for k in range(st.lans):
                va, vb = self.veth(ia, k), self.veth(ib, k)
                rules += [f'iifname "{va}" oifname "{vb}" drop', f'iifname "{vb}" oifname "{va}" drop']
        body = (
            "  chain cuts {\n    type filter hook forward priority 0; policy accept;\n"
            + "".join(f"    {r}\n" for r in rules)
            + "  }\n"
        )
        host.nft_replace_table(self.table, body)

    # -- status

    def status(self) -> SimStatus:
        st = self._load()
        lans = tuple(
            LanStatus(
                lan_name(k), self.bridge(k), f"10.{st.octet}.{k}.0/24", f"10.{st.octet}.{k}.{HOST_LAST}"
            )
            for k in range(st.lans)
        )
        nodes = []
        for node in st.node_names:
            i, ns = int(node[4:]), st.node[node]
            if st.daemon_argv is None:
                daemon = "off"
            elif ns.daemon_error:
                daemon = f"failed: {ns.daemon_error}"
            elif host.alive(ns.daemon_pid, ns.daemon_start):
                daemon = "running"
            else:
                daemon = "exited" if ns.daemon_pid is not None else "stopped"
            nodes.append(
                NodeStatus(
                    name=node,
                    state="killed" if ns.killed else "frozen" if ns.frozen else "up",
                    addrs=tuple(f"10.{st.octet}.{k}.{NODE_OFFSET + i}" for k in range(st.lans)),
                    daemon=daemon,
                    daemon_pid=ns.daemon_pid if daemon == "running" else None,
                    netns=self.netns(node),
                    dir=str(self.data_dir / node),
                    daemon_log=str(self.data_dir / node / "log" / "hakitd.out"),
                )
            )
        return SimStatus(
            name=self.name,
            lans=lans,
            nodes=tuple(nodes),
            paths=tuple(st.paths),
            cuts=tuple((a, b) for a, b in st.cuts),
            owner_pid=st.owner_pid,
        )

    # -- removal

    def down(self) -> None:
        """Remove the cluster and everything it created; fine on a half-built or
        half-removed cluster, and on one that does not exist."""
        _require_root()
        with _LOCK:
            self._teardown()

    def _teardown(self) -> None:
        errors: list[str] = []

        def step(action: Callable[[], None]) -> None:
            try:
                action()
            except HakitError as exc:
                errors.append(str(exc))

        def kill_all() -> None:
            # Nothing may run in the node while its namespaces and files go away.
            host.cgroup_kill(self.cgroup)
            host.cgroup_remove(self.cgroup)

        def delete_links() -> None:
            mine = [n for n in host.links() if self._owns_link(n)]
            # veths first: a bridge can only be deleted alone, and its ports go with the veths.
            mine.sort(key=lambda n: n.startswith("hkb"))
            host.ip_batch(f"delete the links of {self.name}", [f"link del {n}" for n in mine])

        def unmount() -> None:
            for target in host.mounts_under([self.state_dir, self.data_dir]):
                host.umount(target)

        def delete_netns() -> None:
            for ns in host.netns_names():
                if self._owns_netns(ns):
                    host.run(f"delete network namespace {ns}", ["ip", "netns", "del", ns])

        step(kill_all)
        step(lambda: host.nft_replace_table(self.table, None))
        step(delete_links)
        step(unmount)
        step(delete_netns)
        step(lambda: host.remove_tree(self.data_dir))
        if not errors:
            # Kept otherwise, so that the half-removed cluster is still listed.
            step(lambda: host.remove_tree(self.state_dir))
            # The last cluster gone takes the parent along (not STATE_ROOT: it holds the lock).
            with contextlib.suppress(OSError):
                DATA_ROOT.rmdir()
        if errors:
            raise HakitError(f"could not remove all of simulated cluster {self.name!r}: " + "; ".join(errors))

    # -- all harnesses

    @classmethod
    def load(cls, name: str = DEFAULT_NAME) -> Sim:
        """The existing cluster `name`; HakitError if there is none."""
        sim = cls(name)
        sim._load()
        return sim

    @staticmethod
    def names() -> list[str]:
        """Clusters that have a state file."""
        try:
            return sorted(
                d.name
                for d in STATE_ROOT.iterdir()
                if NAME_RE.fullmatch(d.name) and (d / "state.json").exists()
            )
        except FileNotFoundError:
            return []

    @staticmethod
    def _traces() -> set[str]:
        """Names of every cluster that left anything on the host, with or without state."""
        found: set[str] = set()
        for root in (STATE_ROOT, DATA_ROOT):
            if root.is_dir():
                found.update(d.name for d in root.iterdir() if NAME_RE.fullmatch(d.name))
        name = NAME_RE.pattern
        checks: list[tuple[str, Iterable[str]]] = [
            (rf"hakit-sim-({name})", (d.name for d in host.cgroup2_root().iterdir())),
            (rf"hksim-({name})-node\d+", host.netns_names()),
            (rf"hk[bv]({name})-\d+(?:-\d+)?", host.links()),
            (rf"hakit_sim_({name})", host.nft_bridge_tables()),
        ]
        for pattern, candidates in checks:
            for candidate in candidates:
                m = re.fullmatch(pattern, candidate)
                if m:
                    found.add(m.group(1))
        for root in (STATE_ROOT, DATA_ROOT):
            for target in host.mounts_under([root]):
                parts = Path(target).relative_to(root).parts
                if parts and NAME_RE.fullmatch(parts[0]):
                    found.add(parts[0])
        return found

    @classmethod
    def _sweep(cls, select: Callable[[State | None], bool]) -> list[str]:
        _require_root()
        removed, errors = [], []
        with _LOCK:
            for name in sorted(cls._traces()):
                sim = cls(name)
                if select(sim._load_or_none()):
                    try:
                        sim._teardown()
                        removed.append(name)
                    except HakitError as exc:
                        errors.append(str(exc))
        if errors:
            raise HakitError("; ".join(errors))
        return removed

    @classmethod
    def sweep_stale(cls) -> list[str]:
        """Remove clusters whose owner process is gone, and leftovers without state.

        Called when a test session starts: a killed test run leaves nothing behind
        for longer than the next run's start."""
        return cls._sweep(lambda st: st is None or st.stale())

    @classmethod
    def down_all(cls, owner_pid: int | None = None) -> list[str]:
        """Remove the clusters made without an owner (or those of owner_pid), and all that
        sweep_stale() removes.

        A cluster that a live process (a running test) owns is left to that process:
        removing it under the test would only turn into a confusing failure there.
        """

        def select(st: State | None) -> bool:
            return st is None or st.stale() or st.owner_pid == owner_pid

        return cls._sweep(select)


def _hakitd_missing() -> str | None:
    """Why hakitd cannot even be imported, so that `up` says so instead of a traceback in a log."""
    try:
        found = importlib.util.find_spec(DAEMON_MODULE) is not None
    except ImportError as exc:
        return f"cannot import {DAEMON_MODULE}: {exc}"
    return None if found else f"{DAEMON_MODULE} is not installed"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _mac(octet: int, lan: int, last: int) -> str:
    """Locally administered MAC spelling the IPv4 address 10.octet.lan.last.

    Fixed, because a real host keeps its MAC across a reboot: with a new one after
    `revive`, the other nodes' ARP caches would black-hole it for seconds.
    """
    return f"02:00:0a:{octet:02x}:{lan:02x}:{last:02x}"


def _cluster_xml(st: State) -> str:
    root = ET.Element("cluster")
    lans = ET.SubElement(root, "lans")
    for k in range(st.lans):
        lan = ET.SubElement(lans, "lan", name=lan_name(k))
        for i in range(1, st.nodes + 1):
            ET.SubElement(lan, "node", name=f"node{i}", addr=f"10.{st.octet}.{k}.{NODE_OFFSET + i}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _allocate_octet(name: str) -> int:
    """Second octet of the cluster's 10.X.0.0/16 block (see the module docstring)."""
    taken = set()
    for other in Sim.names():
        st = Sim(other)._load_or_none()
        if st is not None and other != name:
            taken.add(st.octet)
    used = []
    for net in host.host_networks():
        try:
            parsed = ipaddress.ip_network(net, strict=False)
        except ValueError:
            continue
        if parsed.prefixlen > 0:
            used.append(parsed)
    start = zlib.crc32(name.encode())
    for j in range(len(OCTETS)):
        x = OCTETS[(start + j) % len(OCTETS)]
        block = ipaddress.ip_network(f"10.{x}.0.0/16")
        if x not in taken and not any(block.overlaps(n) for n in used):
            return x
    raise HakitError("no free 10.X.0.0/16 block left for a simulated cluster's LANs")
