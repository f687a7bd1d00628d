"""Checkers and errd against the real thing: links, addresses, listeners, processes, the
kernel's process-event connector, in a simulated cluster.

Each scenario runs a small driver inside a node (DRIVER below): it builds a module's
Checks around a throw-away store, enables classes as the module process would, and
prints every resource change, action and script request as a JSON line with its time.
The test changes the world from outside and waits for the lines it expects.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hakit import ipc
from hakit.check.admin import AdminFlags
from hakit.check.base import BOTH, PRE, PRIM, SECOND, CheckContext, runs_in
from hakit.check.errd import resource_names
from hakit.check.proc_events import parse
from hakit.check.registry import Checks, default_when
from hakit.config.loader import load_module
from hakit.config.rules import Cmp
from hakit.errors import HakitError
from hakit.paths import Paths
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.store.module_store import ModuleStore
from hakit.testing.sim import Sim
from tests.helpers import hakit, make_module
from tests.leaks import assert_no_tasks
from tests.sim_support import IS_ROOT, unique_sim_name

AM = "am"

DRIVER = r'''
import asyncio, json, os, sys, time
from pathlib import Path

import uvloop

from hakit.check.admin import AdminFlags
from hakit.check.base import CheckContext
from hakit.check.registry import Checks
from hakit.check.splitbrain import Witness
from hakit.config.loader import load_module
from hakit.runtime.log import ModuleLog
from hakit.runtime.resources import Resources
from hakit.paths import Paths
from hakit.store.module_store import ModuleStore

spec = json.loads(sys.argv[1])
root = Path(spec["root"])


def emit(**kw):
    print(json.dumps({"t": time.time(), **kw}), flush=True)


async def act(action, origin):
    emit(act=action, origin=origin)


async def run_script(name):
    emit(script=name)
    return 0


async def module_state(name, addr, port):
    states = json.loads(Path(spec["states"]).read_text()) if "states" in spec else {}
    got = states.get(name)
    return tuple(got) if got else None


async def main():
    paths = Paths(etc=root / "etc", lib=root / "lib", log=root / "log", run=root / "run")
    paths.module_var(AM).mkdir(parents=True, exist_ok=True)
    store = ModuleStore(paths.module_db(AM))
    resources = Resources(store)
    resources.subscribe(lambda name, old, new: emit(res=name, value=new))
    ctx = CheckContext(
        module=AM, node=os.environ.get("HAKIT_NODE", "node1"), paths=paths,
        config=load_module(Path(spec["config"])), resources=resources, log=ModuleLog(AM, store),
        act=act, run_script=run_script, env=dict(os.environ, SAFEMODULE=AM), module_state=module_state,
    )
    checks = Checks(ctx, ctx.config.service.mode)
    emit(rules=[[r.label, r.expr.resource, r.expr.value, r.action] for r in checks.rules()])
    for klass in spec.get("enable", []):
        await checks.enable(klass)
    emit(ready=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        call = cmd.pop("call")
        result = None
        try:
            if call == "admin":
                await checks.apply_admin(AdminFlags(**cmd))  # the module's loop runs: a task
            elif call == "set":
                checks.set(cmd["resource"], cmd["value"])
            elif call == "dump":
                result = checks.dump()
            elif call == "witness":
                result = await Witness(ctx).reachable(cmd["timeout"])
            elif call in ("enable_class", "disable_class"):
                await getattr(checks.errd, call)(cmd["klass"])
            else:
                await getattr(checks, call)(cmd["klass"])
        except Exception as exc:
            emit(done=call, error=str(exc))
        else:
            emit(done=call, result=result)
    await checks.stop_all()
    emit(stopped=True)


AM = spec["module"]
uvloop.run(main())
'''


class Driver:
    """The DRIVER running in a node; events are the JSON lines it printed, in order."""

    def __init__(self, sim: Sim, node: str, tmp: Path, config: str, enable: list[str],
                 states: Path | None = None, scripts: dict[str, str] | None = None) -> None:
        self.root = tmp / f"root-{node}"
        self.bin = self.root / "etc" / "modules" / AM / "bin"
        self.bin.mkdir(parents=True)
        for name, body in (scripts or {}).items():
            (self.bin / name).write_text(body)
            (self.bin / name).chmod(0o755)
        (tmp / "driver.py").write_text(DRIVER)
        (tmp / f"userconfig-{node}.xml").write_text(config)
        spec = {"root": str(self.root), "config": str(tmp / f"userconfig-{node}.xml"), "enable": enable,
                "module": AM}
        if states is not None:
            spec["states"] = str(states)
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.proc = sim.popen(node, [sys.executable, str(tmp / "driver.py"), json.dumps(spec)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # Two cursors: resource changes and actions are awaited in their order, and the
        # answers to calls in theirs; the changes a call causes may come before its answer.
        self.rules = self.events[self._find(0, lambda e: "rules" in e)]["rules"]
        self._seen = len(self.events)
        self._answered = self._find(self._seen, lambda e: e.get("ready")) + 1

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def _find(self, start: int, pred: Callable[[dict[str, Any]], Any], timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        scanned = start
        while True:
            for i in range(scanned, len(self.events)):
                if pred(self.events[i]):
                    return i
            scanned = len(self.events)
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = {}
            if not line:
                stderr = self.proc.stderr.read() if line is None and self.proc.stderr else ""
                raise AssertionError(f"no matching event within {timeout}s; got {self.events[-8:]} {stderr}")
            self.events.append(line)

    def wait(self, pred: Callable[[dict[str, Any]], Any], timeout: float = 10.0) -> dict[str, Any]:
        """The next event that matches pred."""
        i = self._find(self._seen, pred, timeout)
        self._seen = i + 1
        return self.events[i]

    def res(self, name: str, value: str, timeout: float = 10.0) -> dict[str, Any]:
        return self.wait(lambda e: e.get("res") == name and e.get("value") == value, timeout)

    def call(self, call: str, **kw: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"call": call, **kw}) + "\n")
        self.proc.stdin.flush()
        i = self._find(self._answered, lambda e: "done" in e)
        self._answered = i + 1
        done = self.events[i]
        assert done["done"] == call
        if done.get("error"):
            raise AssertionError(f"{call}: {done['error']}")
        return done["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # The reader ends at the driver's EOF; then its pipes can go.
        self._reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def config(mode: str = "mirror", body: str = "") -> str:
    extra = {"mirror": '<heart><heartbeat name="default"/></heart>',
             "farm": '<farm><lan name="default"/></farm>'}.get(mode, "")
    return f'<safe><service mode="{mode}">{extra}{body}<user/></service></safe>\n'


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def csim() -> Iterator[Sim]:
    """Two nodes shared by the tests of this file (each leaves them as it found them)."""
    if not IS_ROOT:
        pytest.skip("needs root (namespaces, raw sockets, process events)")
    sim = Sim(unique_sim_name())
    try:
        sim.up(2, lans=1, daemon=False, owner_pid=os.getpid())
        yield sim
    finally:
        sim.down()


@pytest.fixture
def drivers(csim: Sim, tmp_path: Path) -> Iterator[Callable[..., Driver]]:
    started: list[Driver] = []

    def start(node: str, cfg: str, enable: list[str], **kw: Any) -> Driver:
        d = Driver(csim, node, tmp_path / node, cfg, enable, **kw)
        started.append(d)
        return d

    (tmp_path / "node1").mkdir()
    (tmp_path / "node2").mkdir()
    yield start
    for d in started:
        d.close()


@pytest.fixture
def spawn(csim: Sim) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Long-running processes in a node, killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def run(node: str, argv: list[str]) -> subprocess.Popen[bytes]:
        p = csim.popen(node, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        procs.append(p)
        return p

    yield run
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def named_sleep(tmp: Path, name: str) -> str:
    """A copy of sleep whose process name (comm) is `name`."""
    path = tmp / name
    if not path.exists():
        shutil.copy("/bin/sleep", path)
    return str(path)


def comm_started(pid: int, name: str) -> None:
    """Wait until pid has exec'd into `name` (sim's enter execs the command in place)."""
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}/comm").read_text().strip() != name:
        assert time.monotonic() < deadline, f"{pid} never became {name}"
        time.sleep(0.01)


# ---------------------------------------------------------------- checkers in a node

LISTENER = "import socket,sys,time; s=socket.create_server(('127.0.0.1', int(sys.argv[1]))); time.sleep(600)"


@pytest.mark.root
def test_tcp_checker_follows_a_listener(csim, drivers, spawn):
    cfg = config(body='<check><tcp ident="web"><to addr="127.0.0.1" port="7071" interval="0.2" '
                      'timeout="0.5"/></tcp></check>')
    listener = spawn("node1", [sys.executable, "-c", LISTENER, "7071"])
    d = drivers("node1", cfg, [PRE, PRIM])
    assert d.rules == [["t_web", "tcp.web", "down", "restart"]]
    d.res("tcp.web", "up")
    listener.kill()
    d.res("tcp.web", "down", timeout=3)
    spawn("node1", [sys.executable, "-c", LISTENER, "7071"])
    d.res("tcp.web", "up", timeout=3)
    # Stopped with its class: unknown, not a stale verdict.
    d.call("disable", klass=PRIM)
    d.res("tcp.web", "unknown", timeout=3)


@pytest.mark.root
def test_ping_checker_and_witness_follow_a_cut(csim, drivers):
    peer = csim.addr("node2")
    cfg = config(body=f'<check><ping ident="peer"><to addr="{peer}" interval="0.2" timeout="0.6"/></ping>'
                      f'<splitbrain exec="ping" arg="{peer}"/></check>')
    d = drivers("node1", cfg, [PRE])
    assert d.rules == [["p_peer", "ping.peer", "down", "wait"]]
    d.res("ping.peer", "up")
    assert d.call("witness", timeout=1.0) is True
    csim.cut("node1", "node2")
    try:
        d.res("ping.peer", "down", timeout=3)
        assert d.call("witness", timeout=0.5) is False
    finally:
        csim.heal()
    d.res("ping.peer", "up", timeout=3)


@pytest.mark.root
def test_interface_and_address_checkers_follow_netlink_events(csim, drivers):
    vip = csim.spare_addr(0, 1)
    cfg = config(body=(
        '<vip><interface_list><interface check="on"><real_interface>'
        f'<virtual_addr addr="{vip}" where="one_side_alias" check="on"/>'
        '</real_interface></interface></interface_list></vip>'
        '<check><intf ident="lan"><to name="eth0"/></intf></check>'
    ))
    d = drivers("node1", cfg, [PRE, PRIM])
    # <interface> without a name: the one whose subnet holds the VIP.
    assert sorted(d.rules) == sorted([
        ["i_lan", "intf.lan", "down", "wait"],
        ["i_eth0", "intf.eth0", "down", "wait"],
        [f"ip_{vip}", f"ip.{vip}", "down", "stopstart"],
    ])
    d.res("intf.lan", "up")
    d.res("intf.eth0", "up")
    d.res(f"ip.{vip}", "down")
    try:
        csim.exec("node1", ["ip", "link", "set", "eth0", "down"])
        d.res("intf.eth0", "down", timeout=2)
        d.res("intf.lan", "down", timeout=2)
    finally:
        csim.exec("node1", ["ip", "link", "set", "eth0", "up"])
    d.res("intf.eth0", "up", timeout=5)
    try:
        csim.exec("node1", ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"])
        d.res(f"ip.{vip}", "up", timeout=2)
    finally:
        csim.exec("node1", ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"], check=False)
    d.res(f"ip.{vip}", "down", timeout=2)


CHECKER_PROGRAM = """#!/bin/sh
# A custom checker that never reports: the test watches it being supervised.
echo $$ >> "$1"
sleep 600 &
echo $! >> "$1"
wait
"""


def _pids(path: Path, count: int) -> list[int]:
    deadline = time.monotonic() + 5
    while True:
        pids = [int(x) for x in path.read_text().split()] if path.exists() else []
        if len(pids) >= count:
            return pids
        assert time.monotonic() < deadline, f"{path}: {pids}"
        time.sleep(0.02)


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """pid has exited (a zombie waiting for its parent counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat[stat.rindex(")") + 2] == "Z":
            return True
        time.sleep(0.02)
    return False


@pytest.mark.root
def test_custom_checker_is_restarted_and_killed_with_its_group(csim, drivers, tmp_path):
    record = tmp_path / "custom-pids"
    cfg = config(body=f'<check><custom ident="app" exec="checker" arg="{record}" action="restart"/>'
                      f'<custom ident="norule" exec="checker" arg="{tmp_path / "unused"}"/></check>')
    d = drivers("node1", cfg, [], scripts={"checker": CHECKER_PROGRAM})
    assert d.rules == [["c_app", "custom.app", "down", "restart"]]
    d.call("enable", klass=PRIM)
    shell, child = _pids(record, 2)
    # The verdict comes from the program (hakit set -> the module -> Checks.set).
    d.call("set", resource="custom.app", value="down")
    d.res("custom.app", "down")
    with pytest.raises(AssertionError, match="not a custom checker"):
        d.call("set", resource="tcp.web", value="up")
    os.kill(shell, signal.SIGKILL)
    assert _gone(child), "what the checker left in its group was not killed"
    new_shell, new_child = _pids(record, 4)[2:]  # restarted after a short delay
    d.call("disable", klass=PRIM)
    d.res("custom.app", "unknown")
    assert _gone(new_shell) and _gone(new_child)
    with pytest.raises(AssertionError, match="not running"):
        d.call("set", resource="custom.app", value="up")


@pytest.mark.root
def test_module_checker_follows_the_other_module(csim, drivers, tmp_path):
    states = tmp_path / "states.json"
    states.write_text(json.dumps({"db": ["ALONE", "Ready"]}))
    d = drivers("node1", config(body='<check><module name="db"/></check>'), [PRE], states=states)
    assert d.rules == [["m_db", "module.db", "down", "wait"]]
    d.res("module.db", "up")
    states.write_text(json.dumps({"db": ["WAIT", "Transient"]}))
    d.res("module.db", "down", timeout=3)
    states.write_text(json.dumps({"db": ["SECOND", "Ready"]}))
    d.res("module.db", "up", timeout=3)
    states.write_text(json.dumps({}))  # unreachable
    d.res("module.db", "down", timeout=3)


# ---------------------------------------------------------------- errd


ERRD = """<errd>
  <proc name="hkapp" atleast="1" action="restart" class="prim"/>
  <proc name="hkmany" atleast="0" atmost="1" action="stopstart" class="prim"/>
  <proc name="hkmine" action="restart_mine" class="mine"/>
</errd>"""


@pytest.mark.root
def test_errd_sees_deaths_at_once_and_counts_only_its_node(csim, drivers, spawn, tmp_path):
    hkapp = named_sleep(tmp_path, "hkapp")
    # Another node's hkapp does not count: node1's monitoring starts short of one.
    other = spawn("node2", [hkapp, "600"])
    comm_started(other.pid, "hkapp")
    d = drivers("node1", config(body=ERRD), [PRE, PRIM])
    assert d.rules == []  # errd acts by itself
    d.res("errd.hkmany", "up")
    d.res("errd.hkapp", "down", timeout=3)  # after the start-up grace
    act = d.wait(lambda e: "act" in e)
    assert (act["act"], act["origin"]) == ("restart", "errd hkapp")

    mine = spawn("node1", [hkapp, "600"])
    d.res("errd.hkapp", "up", timeout=2)
    killed_at = time.time()
    mine.kill()
    down = d.res("errd.hkapp", "down", timeout=2)
    act = d.wait(lambda e: "act" in e, timeout=2)
    assert act["act"] == "restart"
    assert down["t"] - killed_at < 0.3 and act["t"] - killed_at < 0.3, (down["t"] - killed_at)
    assert other.poll() is None

    # atmost: the second instance is one too many.
    hkmany = named_sleep(tmp_path, "hkmany")
    spawn("node1", [hkmany, "600"])
    spawn("node1", [hkmany, "600"])
    d.res("errd.hkmany", "down", timeout=2)
    assert d.wait(lambda e: "act" in e, timeout=2)["act"] == "stopstart"

    # A custom class runs between errd enable and disable; its action is a script.
    proc = spawn("node1", [named_sleep(tmp_path, "hkmine"), "600"])
    comm_started(proc.pid, "hkmine")
    d.call("enable_class", klass="mine")
    d.res("errd.hkmine", "up")
    proc.kill()
    d.res("errd.hkmine", "down", timeout=2)
    assert d.wait(lambda e: "script" in e, timeout=2)["script"] == "restart_mine"
    d.call("disable_class", klass="mine")
    d.res("errd.hkmine", "unknown")

    # errd off: every monitor stops until on.
    d.call("admin", errd="off", checker="on")
    d.res("errd.hkmany", "unknown")
    d.call("admin", errd="on", checker="on")
    d.res("errd.hkmany", "down", timeout=3)


@pytest.mark.root
def test_errd_counts_only_the_named_users_processes(csim, drivers, spawn):
    """<proc user>: another user's process named like the application neither stands for
    it once it is dead nor pushes the count over atmost."""
    shared = Path(tempfile.mkdtemp(prefix="hakit-test-"))  # the other user must run the binary
    try:
        shared.chmod(0o755)
        app = named_sleep(shared, "hkowned")
        os.chmod(app, 0o755)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", app, "600"]
        errd = ('<errd><proc name="hkowned" user="root" atleast="1" atmost="1" action="restart" '
                'class="prim"/></errd>')
        d = drivers("node1", config(body=errd), [PRE, PRIM])
        impostor = spawn("node1", as_nobody)
        comm_started(impostor.pid, "hkowned")
        d.res("errd.hkowned", "down", timeout=3)  # the impostor does not stand for it
        spawn("node1", [app, "600"])
        d.res("errd.hkowned", "up", timeout=2)
        comm_started(spawn("node1", as_nobody).pid, "hkowned")
        time.sleep(0.5)
        (monitor,) = [m for m in d.call("dump") if m.get("name") == "hkowned"]
        assert monitor["count"] == 1, monitor  # nor pushes it over atmost
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.root
def test_checker_off_stops_every_checker(csim, drivers):
    cfg = config(body='<check><intf ident="lan"><to name="eth0"/></intf></check>')
    d = drivers("node1", cfg, [PRE])
    d.res("intf.lan", "up")
    d.call("admin", errd="on", checker="off")
    d.res("intf.lan", "unknown")
    dump = d.call("dump")
    assert [(c["resource"], c["running"]) for c in dump] == [("intf.lan", False)]
    d.call("admin", errd="on", checker="on")
    d.res("intf.lan", "up")


@pytest.mark.root
def test_hakit_kill_signals_only_this_nodes_processes(csim, spawn, tmp_path):
    victim = named_sleep(tmp_path, "hkvictim")
    here = spawn("node1", [victim, "600"])
    there = spawn("node2", [victim, "600"])
    comm_started(here.pid, "hkvictim")
    comm_started(there.pid, "hkvictim")
    run = csim.exec("node1", ["hakit", "kill", "-level=terminate", "-name=hkvictim"], check=False)
    assert run.returncode == 0, run.stderr
    assert here.wait(5) == -signal.SIGTERM
    assert there.poll() is None
    # Nothing left to kill is not an error.
    assert csim.exec("node1", ["hakit", "kill", "-level=kill", "-name=hkvictim"], check=False).returncode == 0


# ---------------------------------------------------------------- commands


@pytest.fixture
def installed(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, HAKIT_ROOT=str(tmp_path / "root"))
    env.pop("SAFEMODULE", None)
    archive = make_module(tmp_path, config(mode="light"), {})
    hakit("module", "install", "-m", AM, str(archive), env=env, check=True)
    return env


def test_admin_switches_persist_and_need_no_running_module(installed):
    env, root = installed, Path(installed["HAKIT_ROOT"])
    p = Paths(root / "etc/hakit", root / "var/lib/hakit", root / "var/log/hakit", root / "run/hakit")
    assert AdminFlags.load(p, AM) == AdminFlags("on", "on")
    run = hakit("errd", "suspend", "-m", AM, env=env, check=True)
    assert "module stopped" in run.stdout
    hakit("checker", "off", env=dict(env, SAFEMODULE=AM), check=True)  # a script's way
    assert AdminFlags.load(p, AM) == AdminFlags("suspended", "off")
    hakit("errd", "on", "-m", AM, env=env, check=True)
    assert AdminFlags.load(p, AM) == AdminFlags("on", "off")
    # These act on the running module only.
    for args in (["errd", "enable", "mine", "-m", AM], ["set", "-m", AM, "-r", "custom.x", "-v", "up"]):
        run = hakit(*args, env=env)
        assert run.returncode == 1 and "is not running on this node" in run.stderr, run.stderr
    assert hakit("errd", "off", env=env).returncode == 2  # no -m, no SAFEMODULE
    assert hakit("errd", "off", "-m", "ghost", env=env).returncode == 1
    assert hakit("kill", "-level=bogus", "-name=x", env=env).returncode == 2


def test_commands_reach_a_running_module(installed):
    """The requests the module process answers (it re-reads admin.json on "admin")."""
    root = Path(installed["HAKIT_ROOT"])
    sock = root / "run/hakit/modules" / f"{AM}.sock"
    got: list[tuple[str, dict[str, Any]]] = []
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    loop = asyncio.new_event_loop()

    async def handler(op: str, args: dict[str, Any], user: str) -> Any:
        got.append((op, args))
        if op == "set" and args["resource"] != "custom.x":
            raise HakitError("tcp.web is not a custom checker's resource")
        return None

    async def serve() -> None:
        stop.append(asyncio.Event())
        server = await ipc.serve(sock, handler)
        ready.set()
        async with server:
            await stop[0].wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()))
    thread.start()
    try:
        assert ready.wait(10)
        env = dict(installed, SAFEMODULE=AM)
        hakit("errd", "off", env=env, check=True)
        hakit("errd", "enable", "mine", env=env, check=True)
        hakit("errd", "disable", "mine", env=env, check=True)
        hakit("set", "-r", "custom.x", "-v", "up", env=env, check=True)
        refused = hakit("set", "-r", "tcp.web", "-v", "up", env=env)
        assert refused.returncode == 1 and "not a custom checker" in refused.stderr
    finally:
        if stop:
            loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        try:
            assert_no_tasks(loop)
        finally:
            loop.close()
    assert got == [
        ("admin", {}),
        ("errd", {"verb": "enable", "klass": "mine"}),
        ("errd", {"verb": "disable", "klass": "mine"}),
        ("set", {"resource": "custom.x", "value": "up"}),
        ("set", {"resource": "tcp.web", "value": "up"}),
    ]


# ---------------------------------------------------------------- unit


def test_classes():
    assert runs_in(PRE, {PRE}) and not runs_in(PRE, {PRIM})
    assert runs_in(PRIM, {PRE, PRIM}) and not runs_in(PRIM, {PRE, SECOND})
    assert runs_in(BOTH, {PRIM}) and runs_in(BOTH, {SECOND}) and not runs_in(BOTH, {PRE})
    # A farm node enables "both": every prim/second checker runs there.
    assert runs_in(PRIM, {BOTH}) and runs_in(SECOND, {BOTH})
    assert [default_when(k, "mirror") for k in ("tcp", "ip", "custom", "ping", "intf", "module")] == [
        PRIM, PRIM, PRIM, PRE, PRE, PRE]
    assert default_when("tcp", "farm") == BOTH and default_when("tcp", "light") == PRIM


def _checks(tmp_path: Path, body: str, mode: str = "mirror") -> Checks:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "u.xml").write_text(config(mode, body))
    p = Paths(tmp_path / "etc", tmp_path / "lib", tmp_path / "log", tmp_path / "run")
    p.module_var(AM).mkdir(parents=True, exist_ok=True)
    store = ModuleStore(p.module_db(AM))

    async def never(*_: Any) -> Any:
        raise AssertionError("not called")

    ctx = CheckContext(AM, "node1", p, load_module(tmp_path / "u.xml"), Resources(store),
                       ModuleLog(AM, store), never, never, {}, never)
    return Checks(ctx, mode)


def test_generated_rules_and_action_check(tmp_path):
    checks = _checks(tmp_path, '<check><tcp ident="web" when="both"><to addr="127.0.0.1" port="80"/></tcp>'
                               '<custom ident="c" exec="x"/><module name="db" ident="dep"/></check>',
                     mode="farm")
    assert [(r.label, r.expr, r.action) for r in checks.rules()] == [
        ("t_web", Cmp("tcp.web", "==", "down"), "restart"),
        ("m_dep", Cmp("module.dep", "==", "down"), "wait"),
    ]
    assert [(c["resource"], c["when"]) for c in checks.dump()] == [
        ("tcp.web", BOTH), ("custom.c", BOTH), ("module.dep", PRE)]
    with pytest.raises(HakitError, match="a checker's action is one of"):
        _checks(tmp_path / "bad",
                '<check><tcp ident="web" action="myscript"><to addr="h" port="1"/></tcp></check>')


def test_errd_resource_names_and_admin_file(tmp_path):
    from hakit.config.module_model import Proc

    procs = (Proc(name="java"), Proc(name="db"), Proc(name="java"))
    assert resource_names(procs) == ["errd.java", "errd.db", "errd.java.2"]
    p = Paths(tmp_path / "etc", tmp_path / "lib", tmp_path / "log", tmp_path / "run")
    AdminFlags("suspended", "off").save(p, AM)
    assert AdminFlags.load(p, AM) == AdminFlags("suspended", "off")
    AdminFlags.path(p, AM).write_text("{not json")
    with pytest.raises(HakitError, match="damaged"):
        AdminFlags.load(p, AM)


def test_proc_event_parser_skips_what_it_does_not_know():
    import struct

    def message(what: int, data: bytes) -> bytes:
        event = struct.pack("=IIQ", what, 0, 0) + data
        cn = struct.pack("=IIIIHH", 1, 1, 0, 0, len(event), 0) + event
        return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn

    data = (message(0x2, struct.pack("=II", 10, 10)) + message(0x4, struct.pack("=IIII", 1, 1, 0, 0))
            + message(0x80000000, struct.pack("=IIIIII", 11, 10, 0, 9, 1, 1)))
    from hakit.check.proc_events import Exec, Exit

    assert parse(data) == [Exec(10, 10), Exit(11, 10)]
    assert parse(data[:20]) == []
