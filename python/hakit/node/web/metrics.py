"""GET /metrics: this node's modules in Prometheus' text exposition format (0.0.4).

Each node answers for itself only: Prometheus scrapes every node, and a node that is down
is a target down, not a hole in another node's answer.  Everything comes from the module
stores, each read once per scrape (one SELECT of its resources), so a scrape costs the
same whether the modules run or not, and never waits on a module process.

The resources are the module process's own (docs/web-metrics.md lists what each metric
is made of).  A module that is stopped exports its state and its scripts' durations only:
what its process last found (bandwidths, shares, checkers) is no longer true.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hakit import __version__
from hakit.config.module_model import CHECKERS
from hakit.module.catalog import Catalog
from hakit.node.web.reads import node_name, sync_progress
from hakit.paths import Paths
from hakit.store.module_store import ModuleStore, Resource

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Resource prefixes of checkers: those of <check> (tcp., ping., ...), errd's and the split-brain witness.
CHECKER_KINDS = frozenset({c.RESOURCE for c in CHECKERS} | {"errd", "splitbrain"})
NOT_CHECKERS = frozenset({"module.state", "module.status"})  # module.<ident> is the module checker's
RFS_DIRECTIONS = ("netout", "rep", "rei", "netin")
FARM_VERDICTS = ("accepted", "dropped", "local_flow", "redirected", "arp")


@dataclass
class Family:
    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


class Exposition:
    """The families of one scrape, in a fixed order; each written once, its samples together."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}

    def family(self, name: str, kind: str, help_text: str) -> Family:
        return self.families.setdefault(name, Family(name, kind, help_text))

    def text(self) -> str:
        out: list[str] = []
        for f in self.families.values():
            if not f.samples:
                continue
            out.append(f"# HELP {f.name} {_escape_help(f.help)}")
            out.append(f"# TYPE {f.name} {f.kind}")
            for labels, value in f.samples:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                out.append(f"{f.name}{{{inner}}} {_number(value)}" if inner else f"{f.name} {_number(value)}")
        return "\n".join(out) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) and abs(value) < 1 << 53 else repr(value)


def _float(text: str | None) -> float | None:
    """A resource's value as a number; None for the words a resource also takes (unknown, lost)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def scrape(p: Paths, now: float | None = None) -> str:
    """This node's metrics, as the text GET /metrics answers."""
    now = time.time() if now is None else now
    node = node_name(p)
    ex = Exposition()
    ex.family("hakit_info", "gauge", "This node's hakit: its version.").add(1, node=node, version=__version__)
    _declare(ex)
    catalog = Catalog(p)
    for module in catalog.names():
        db = p.module_db(module)
        if not db.exists():
            values: dict[str, Resource] = {}
        else:
            with ModuleStore(db) as store:
                values = {r.name: r for r in store.resources()}
        _module(ex, module, node, values, now)
    return ex.text()


def _declare(ex: Exposition) -> None:
    """Every family, in the order the text shows them (a family without samples is left out)."""
    for name, kind, help_text in FAMILIES:
        ex.family(name, kind, help_text)


FAMILIES = (
    ("hakit_module_state", "gauge",
     "The module's state on this node, in labels state (STOP WAIT ALONE PRIM SECOND UP) and status "
     "(Ready Transient NotReady); always 1."),
    ("hakit_module_state_seconds", "gauge", "Seconds since the module entered its current state."),
    ("hakit_heartbeat_up", "gauge", "1 while some peer is heard on the LAN, else 0."),
    ("hakit_heartbeat_lateness_seconds", "gauge",
     "How much longer than a pulse the longest wait for the peer's next heartbeat on the LAN was over "
     "the last 5 s, in whole read ticks (a quarter pulse); absent while the peer is lost."),
    ("hakit_rfs_bandwidth_bytes_per_second", "gauge",
     "Replication traffic over the last second: direction netout (on the wire), rep (live stream) and "
     "rei (reintegration) on the primary, netin on the secondary."),
    ("hakit_rfs_apply_failures", "gauge", "Operations the secondary failed to apply or receive, as "
     "counted by the running hakit-rfs processes."),
    ("hakit_rfs_sync_active", "gauge", "1 while a synchronisation of the secondary runs, else 0."),
    ("hakit_rfs_sync_done_bytes", "gauge", "Bytes of the synchronisation scanned so far."),
    ("hakit_rfs_sync_total_bytes", "gauge", "Bytes the synchronisation has to scan."),
    ("hakit_rfs_sync_rate_bytes_per_second", "gauge",
     "Scanned bytes over elapsed time of the running synchronisation."),
    ("hakit_rfs_sync_eta_seconds", "gauge", "Estimated seconds until the synchronisation ends."),
    ("hakit_farm_share_ratio", "gauge", "Share of the group's buckets (clients) this node owns, 0 to 1."),
    ("hakit_farm_filter_attached", "gauge", "1 while the farm's eBPF filter is attached, else 0."),
    ("hakit_farm_packets_total", "counter", "Packets the farm's filter saw, by verdict."),
    ("hakit_farm_bytes_total", "counter", "Bytes the farm's filter saw, by verdict."),
    ("hakit_farm_connections", "gauge", "Established TCP connections to the virtual address on this node."),
    ("hakit_checker_state", "gauge",
     "A checker's verdict, in label state (up, down, unknown: not running); always 1."),
    ("hakit_script_duration_seconds", "gauge", "How long the last run of the module script took."),
)


def _module(ex: Exposition, module: str, node: str, values: Mapping[str, Resource], now: float) -> None:
    def fam(name: str) -> Family:
        return ex.families[name]

    state, status = values.get("module.state"), values.get("module.status")
    fam("hakit_module_state").add(1, module=module, node=node, state=state.value if state else "STOP",
                                  status=status.value if status else "NotReady")
    if state is not None:
        fam("hakit_module_state_seconds").add(max(0.0, now - state.since), module=module, node=node)
    for name in _under(values, "script."):
        if name.endswith(".duration") and (v := _float(values[name].value)) is not None:
            fam("hakit_script_duration_seconds").add(v, module=module, node=node,
                                                     script=name[len("script."):-len(".duration")])
    if state is None or state.value == "STOP":
        return
    m = {"module": module, "node": node}
    text = {name: r.value for name, r in values.items()}

    lans = [name[len("heartbeat."):] for name in _under(values, "heartbeat.")]
    for lan in lans:
        fam("hakit_heartbeat_up").add(1 if text[f"heartbeat.{lan}"] == "up" else 0, **m, lan=lan)
    for name in _under(values, "heart.late."):
        rest = name[len("heart.late."):]
        # LAN names may hold dots: the LAN is the one of this module's heartbeats the name starts with.
        on = next((x for x in sorted(lans, key=len, reverse=True) if rest.startswith(f"{x}.")), None)
        if on is not None and (v := _float(text[name])) is not None:
            fam("hakit_heartbeat_lateness_seconds").add(v, **m, lan=on, peer=rest[len(on) + 1:])

    for direction in RFS_DIRECTIONS:
        if (v := _float(text.get(f"rfs.{direction}_bandwidth"))) is not None:
            fam("hakit_rfs_bandwidth_bytes_per_second").add(v * 1024, **m, direction=direction)
    if (v := _float(text.get("rfs.apply_failures"))) is not None:
        fam("hakit_rfs_apply_failures").add(v, **m)
    if "rfs.sync_state" in text:
        sync = sync_progress(text)
        fam("hakit_rfs_sync_active").add(1 if sync["active"] else 0, **m)
        if sync["active"]:
            fam("hakit_rfs_sync_done_bytes").add(sync["done_bytes"], **m)
            fam("hakit_rfs_sync_total_bytes").add(sync["total_bytes"], **m)
            fam("hakit_rfs_sync_rate_bytes_per_second").add(sync["rate_bps"], **m)
            if sync["eta_s"] is not None:
                fam("hakit_rfs_sync_eta_seconds").add(sync["eta_s"], **m)

    for name in _under(values, "vip.share."):
        if (v := _float(text[name])) is not None:
            fam("hakit_farm_share_ratio").add(v / 100, **m, group=name[len("vip.share."):])
    if "vip.filter" in text:
        fam("hakit_farm_filter_attached").add(1 if text["vip.filter"] == "attached" else 0, **m)
    for verdict in FARM_VERDICTS:
        for unit in ("packets", "bytes"):
            if (v := _float(text.get(f"vip.{unit}.{verdict}"))) is not None:
                fam(f"hakit_farm_{unit}_total").add(v, **m, verdict=verdict)
    for name in _under(values, "connections."):
        if (v := _float(text[name])) is not None:
            fam("hakit_farm_connections").add(v, **m, vip=name[len("connections."):])

    for name, value in text.items():
        kind = name.split(".", 1)[0]
        if kind in CHECKER_KINDS and "." in name and name not in NOT_CHECKERS:
            fam("hakit_checker_state").add(1, **m, checker=name, kind=kind, state=value)


def _under(values: Iterable[str], prefix: str) -> list[str]:
    return sorted(n for n in values if n.startswith(prefix))
