"""`make demo`: a simulated 3-node cluster with a sample mirror module on node1 and
node2 and a sample farm module on all three, configured from the shipped templates
the way an operator would (install on node1, `-E` to the others), started, and
watched: every state change on every node is printed as it happens."""

from __future__ import annotations

import re
import secrets
import signal
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from hakit.config.safe_archive import USERCONFIG
from hakit.errors import HakitError
from hakit.files import write_atomic
from hakit.module.catalog import template
from hakit.module.scripts import hakit_bin_dir
from hakit.store.module_store import ModuleStore
from hakit.testing.sim import Sim

MIRROR_NODES = ("node1", "node2")
FARM_NODES = ("node1", "node2", "node3")
DEMO_ADMIN = "admin"


# The demo's farm application: a web server on every node answering with the node's name.
FARM_SCRIPTS = {
    "start_both": """#!/bin/sh
echo "Running start_both $*"
mkdir -p /var/lib/hakit/demo-www
hostname > /var/lib/hakit/demo-www/index.html
setsid python3 -m http.server 80 --directory /var/lib/hakit/demo-www </dev/null >/dev/null 2>&1 &
echo $! > /var/lib/hakit/demo-www.pid
""",
    "stop_both": """#!/bin/sh
echo "Running stop_both $*"
kill "$(cat /var/lib/hakit/demo-www.pid 2>/dev/null)" 2>/dev/null
exit 0
""",
}


def with_macros(template_name: str, values: dict[str, str], out: Path,
                scripts: dict[str, str] | None = None) -> Path:
    """A copy of a shipped template whose <macro> values (and some scripts) are replaced."""
    src = template(template_name)
    assert src is not None, f"template {template_name} missing from the package"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == USERCONFIG:
                text = data.decode()
                for name, value in values.items():
                    text = re.sub(rf'(<macro name="{name}" value=")[^"]*(")', rf"\g<1>{value}\g<2>", text)
                # The demo has one client, the host: by port, its connections spread over the nodes.
                text = text.replace('filter="on_addr"', 'filter="on_port"')
                data = text.encode()
            name = info.filename.rsplit("/", 1)[-1]
            if info.filename.startswith("bin/") and scripts and name in scripts:
                data = scripts[name].encode()
            zout.writestr(info, data)
    return out


def bring_up(sim: Sim, workdir: Path, owner_pid: int | None = None) -> None:
    sim.up(nodes=len(FARM_NODES), lans=1, daemon=True, paths=("/var/lib/demo-data",), owner_pid=owner_pid)
    mirror = with_macros(
        "mirror.safe",
        {"VIRTUAL_IP": sim.spare_addr(0, 1), "REPDIR": "/var/lib/demo-data"},
        workdir / "demo-mirror.safe",
    )
    farm = with_macros("farm.safe", {"VIRTUAL_IP": sim.spare_addr(0, 2)}, workdir / "demo-farm.safe",
                       FARM_SCRIPTS)
    hk = str(hakit_bin_dir() / "hakit")

    def run(node: str, *args: str) -> None:
        sim.exec(node, [hk, *args], capture=True)

    run("node1", "module", "install", "-m", "mirror", "-M", "1", str(mirror))
    run("node1", "module", "install", "-m", "farm", "-M", "2", str(farm))
    run("node1", "-H", ",".join(MIRROR_NODES), "-E", "mirror")
    run("node1", "-H", ",".join(FARM_NODES), "-E", "farm")
    # The mirror's first start: node1 holds the reference data.
    run("node1", "prim", "-m", "mirror")
    run("node2", "start", "-m", "mirror")
    run("node1", "-H", ",".join(FARM_NODES), "start", "-m", "farm")
    # The console's administrator, made for this demo only (a real cluster has none until an
    # operator makes one); its password stays beside node1's files for describe().
    password = secrets.token_urlsafe(12)
    sim.exec("node1", [hk, "web", "user", "add", DEMO_ADMIN, "--role", "admin", "--password-stdin"],
             input=password + "\n")
    write_atomic(demo_password_file(sim), password.encode(), 0o600)


def demo_password_file(sim: Sim) -> Path:
    return sim.host_path("node1", "/etc/hakit/web/demo-admin-password")


def states(sim: Sim) -> dict[tuple[str, str], str]:
    """Each module's state on each node, read from the nodes' stores."""
    out: dict[tuple[str, str], str] = {}
    for node in sim.nodes():
        for module in ("mirror", "farm"):
            db = sim.host_path(node, f"/var/lib/hakit/modules/{module}/state.db")
            if not db.exists():
                continue
            with ModuleStore(db) as store:
                said = store.state()
            if said:
                out[(module, node)] = f"{said[0]} ({said[1]})"
    return out


def watch(sim: Sim, stop: Callable[[], bool]) -> None:
    """Print every module state change until `stop()`; a killed node shows as down."""
    seen: dict[tuple[str, str], str] = {}
    while not stop():
        try:
            now = states(sim)
            node_state = {n.name: n.state for n in sim.status().nodes}
        except (HakitError, OSError, sqlite3.Error):
            time.sleep(0.2)
            continue
        for key in sorted(now):
            up = node_state.get(key[1], "up") == "up"
            value = now[key] if up else f"node {node_state[key[1]]}"
            if seen.get(key) != value:
                seen[key] = value
                print(f"{time.strftime('%H:%M:%S')}  {key[0]:<6} on {key[1]}: {value}", flush=True)
        time.sleep(0.2)


def describe(sim: Sim) -> str:
    n = sim.name
    hk = hakit_bin_dir() / "hakit"
    lines = [
        f"Simulated cluster '{n}' is up: nodes {', '.join(sim.nodes())}.",
        f"  mirror module 'mirror' on {' and '.join(MIRROR_NODES)}, replicating /var/lib/demo-data; "
        "farm module 'farm' on all nodes.",
        "",
        "Each node's hakit (run from another terminal):",
    ]
    for node in sim.nodes():
        lines.append(f"  {hk} sim exec --name {n} {node} -- hakit module list   # {sim.addr(node)}")
    lines += [
        f"  {hk} sim exec --name {n} node1 -- hakit state -m mirror -v",
        f"  {hk} sim exec --name {n} node1 -- hakit logview -m farm -A",
        f"  {hk} sim exec --name {n} node1 -- bash    # a shell on node1",
        f"  {hk} sim exec --name {n} node1 -- sh -c 'date >> /var/lib/demo-data/log'   # on the primary",
        f"  {hk} sim exec --name {n} node2 -- cat /var/lib/demo-data/log               # already on node2",
        f"  curl http://{sim.spare_addr(0, 2)}/    # the farm's VIP, from the host: one of the nodes answers",
        f"  {hk} sim exec --name {n} node1 -- hakit state -m farm -v   # vip.share.FarmProto: its share",
        "",
        "Logs on the host:",
    ]
    for node in sim.nodes():
        logdir = sim.host_path(node, "/var/log/hakit")
        lines.append(f"  {node}: {logdir}  (hakitd.out, modules/*/userlog_*.ulog)")
    try:
        password = demo_password_file(sim).read_text()
    except OSError:
        password = "(unknown: 'hakit web user passwd admin' on node1 sets one)"
    lines += [
        "",
        f"Web console: https://{sim.addr('node1')}:9453/ (or any node's address), "
        f"user {DEMO_ADMIN}, password {password}",
        f"  (made for this demo; the certificate is the cluster's own: accept the browser's warning, or "
        f"trust {sim.host_path('node1', '/etc/hakit/pki/ca.crt')})",
        "",
        f"Break it: {hk} sim kill --name {n} node1     # mirror fails over to node2; the farm's VIP "
        "keeps answering (node2, node3)",
        f"          {hk} sim revive --name {n} node1",
        f"          {hk} sim exec --name {n} node1 -- hakit start -m mirror      # back as SECOND",
        f"          {hk} sim exec --name {n} node1 -- hakit -H '*' start -m farm",
        f"          {hk} sim cut --name {n} node1 node2 ; {hk} sim heal --name {n}",
        "Ctrl-C (or 'make demo-down') removes everything.",
    ]
    return "\n".join(lines)


def run_demo(name: str, detach: bool) -> int:
    sim = Sim(name)
    if sim.exists():
        print(f"Simulated cluster '{name}' already runs; remove it with 'make demo-down'.\n")
        print(describe(sim))
        return 0
    with tempfile.TemporaryDirectory(prefix="hakit-demo-") as tmp:
        try:
            bring_up(sim, Path(tmp))
        except BaseException:
            sim.down()
            raise
    print(describe(sim), flush=True)
    if detach:
        return 0
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("\nModule states (changes appear here as they happen):", flush=True)
    watch(sim, lambda: stop)
    print("\nRemoving the simulated cluster…", flush=True)
    sim.down()
    return 0
