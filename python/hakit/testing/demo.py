"""`make demo`: a simulated 3-node cluster with a sample mirror module on node1 and
node2 and a sample farm module on all three, installed and configured from the
shipped templates."""

from __future__ import annotations

import re
import signal
import tempfile
import zipfile
from pathlib import Path

from hakit.config.safe_archive import USERCONFIG
from hakit.module.catalog import template
from hakit.module.scripts import hakit_bin_dir
from hakit.testing.sim import Sim

MIRROR_NODES = ("node1", "node2")
FARM_NODES = ("node1", "node2", "node3")


def with_macros(template_name: str, values: dict[str, str], out: Path) -> Path:
    """A copy of a shipped template whose <macro> values are replaced."""
    src = template(template_name)
    assert src is not None, f"template {template_name} missing from the package"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == USERCONFIG:
                text = data.decode()
                for name, value in values.items():
                    text = re.sub(rf'(<macro name="{name}" value=")[^"]*(")', rf"\g<1>{value}\g<2>", text)
                data = text.encode()
            zout.writestr(info, data)
    return out


def bring_up(sim: Sim, workdir: Path) -> None:
    sim.up(nodes=len(FARM_NODES), lans=1, daemon=True, paths=("/var/lib/demo-data",))
    mirror = with_macros(
        "mirror.safe",
        {"VIRTUAL_IP": sim.spare_addr(0, 1), "REPDIR": "/var/lib/demo-data"},
        workdir / "demo-mirror.safe",
    )
    farm = with_macros("farm.safe", {"VIRTUAL_IP": sim.spare_addr(0, 2)}, workdir / "demo-farm.safe")
    hk = str(hakit_bin_dir() / "hakit")
    for node in MIRROR_NODES:
        sim.exec(node, [hk, "module", "install", "-m", "mirror", "-M", "1", str(mirror)])
    for node in FARM_NODES:
        sim.exec(node, [hk, "module", "install", "-m", "farm", "-M", "2", str(farm)])


def describe(sim: Sim) -> str:
    n = sim.name
    hk = hakit_bin_dir() / "hakit"
    lines = [
        f"Simulated cluster '{n}' is up: nodes {', '.join(sim.nodes())}.",
        f"  mirror module 'mirror' on {' and '.join(MIRROR_NODES)}; farm module 'farm' on all nodes.",
        "",
        "Each node's hakit (run from another terminal):",
    ]
    for node in sim.nodes():
        lines.append(f"  {hk} sim exec --name {n} {node} -- hakit module list   # {sim.addr(node)}")
    lines += [
        f"  {hk} sim exec --name {n} node1 -- hakit state -m mirror -v",
        f"  {hk} sim exec --name {n} node1 -- hakit logview -m farm -A",
        f"  {hk} sim exec --name {n} node1 -- bash    # a shell on node1",
        "",
        "Logs on the host:",
    ]
    for node in sim.nodes():
        logdir = sim.host_path(node, "/var/log/hakit")
        lines.append(f"  {node}: {logdir}  (hakitd.out, modules/*/userlog_*.ulog)")
    lines += [
        "",
        f"Break it: {hk} sim kill --name {n} node2 ; {hk} sim revive --name {n} node2",
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
    while not stop:
        signal.pause()
    print("\nRemoving the simulated cluster…", flush=True)
    sim.down()
    return 0
