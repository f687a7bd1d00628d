"""A module run by hakit on a simulated cluster, as an operator drives it: `hk` runs the
CLI in a node, `install` puts a module on nodes, `state`/`wait_state`, its resources and
their history, the trace the default scripts write.

    install(sim, tmp_path, ["node1", "node2"], mirror_conf(sim.spare_addr(0, 1)))
    hk(sim, "node1", "prim", "-m", MODULE)
    wait_state(sim, "node1", "PRIM (Ready)")
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import make_module, wait_for

MODULE = "am"
TRACE = "/var/lib/hakit/trace"
SCRIPTS = ("prestart", "start_prim", "stop_prim", "start_second", "stop_second", "start_both",
           "stop_both", "poststop")
TRACING = {s: f'#!/bin/sh\necho "{s} $*" >> {TRACE}\n' for s in SCRIPTS}


def mirror_conf(vip: str, extra: str = "", service: str = "") -> str:
    return f"""<!DOCTYPE safe>
<safe>
  <service mode="mirror" {service}>
    <heart><heartbeat name="default"/></heart>
    <vip><interface_list><interface>
      <real_interface><virtual_addr addr="{vip}" where="one_side_alias"/></real_interface>
    </interface></interface_list></vip>
    {extra}
    <user/>
  </service>
</safe>
"""


def hk(sim, node: str, *args: str, check: bool = True) -> str:
    run = sim.exec(node, ["hakit", *args], check=False, capture=True, timeout=60)
    if check and run.returncode != 0:
        raise AssertionError(f"{node}: hakit {' '.join(args)} -> {run.returncode}: {run.stderr}")
    return run.stdout + run.stderr


def state(sim, node: str, module: str = MODULE) -> str:
    return state_of(hk(sim, node, "state", "-m", module))


def state_of(out: str) -> str:
    """"STATE (Status)" from what `hakit state -m AM` printed."""
    return out.split(":", 1)[1].split("since")[0].split("never")[0].strip()


def wait_state(sim, node: str, expected: str, module: str = MODULE, timeout: float = 15.0) -> float:
    seen: list[str] = []

    def ok() -> bool:
        seen.append(state(sim, node, module))
        return seen[-1] == expected

    try:
        return wait_for(f"{node} {expected}", ok, timeout)
    except AssertionError:
        raise AssertionError(f"{node} never reached {expected} (last {seen[-1:]}):\n"
                             + hk(sim, node, "logview", "-m", module, "-A")) from None


def resources(sim, node: str, module: str = MODULE) -> dict[str, str]:
    out = hk(sim, node, "state", "-m", module, "-v")
    return {w[0]: w[1] for w in (line.split() for line in out.splitlines()[1:]) if len(w) >= 4}


def history(sim, node: str, resource: str, module: str = MODULE) -> list[tuple[str, str]]:
    """(when, value) of each change of the resource, oldest first (the store keeps the
    newest 100)."""
    out = hk(sim, node, "history", "-m", module, "-r", resource)
    return [(line.rsplit(None, 1)[0], line.rsplit(None, 1)[1]) for line in out.splitlines() if line.strip()]


def trace(sim, node: str) -> list[str]:
    path = sim.host_path(node, TRACE)
    return path.read_text().splitlines() if path.exists() else []


def install(sim, tmp_path: Path, nodes: list[str], conf: str, scripts: dict[str, str] | None = None,
            module: str = MODULE, module_id: int = 7) -> None:
    archive = make_module(tmp_path / module, conf, scripts if scripts is not None else TRACING)
    for node in nodes:
        hk(sim, node, "module", "install", "-m", module, "-M", str(module_id), str(archive))
