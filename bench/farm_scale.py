#!/usr/bin/env python3
"""Farms of 4 to 32 nodes: how long they take to come UP, peers lost while nothing failed,
the module processes' CPU once settled, how evenly new connections spread, and how soon
every new connection is answered again after a node is killed.

One simulated cluster of the largest size asked for; each size is a farm module of its
own (`farmN`, its own id, VIP and store) on node1..nodeN, the other nodes idle, and the
farm of the size before stopped. Building the cluster once costs less than building one
per size, and a farm sees only its own nodes.

The client is the host, on the LAN's bridge (10.X.0.254), as in failover.py: it resolves
the VIP through its own ARP cache as a client on the LAN does, and it needs no node of
its own, so 32 farm nodes fit in the simulator's 32 without a 33rd (and without longer
interface names or another address plan).

The last line printed for each size is one JSON object (up_sequential_s,
up_all_at_once_s, false_losses, cpu_pct_median, cpu_pct_max, spread_max_dev,
recovery_kill_s, recovery_kill_elected_s, goals, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import harness
    from hakit.config.module_model import Heart
    from hakit.errors import HakitError
    from hakit.module.scripts import hakit_bin_dir
    from hakit.store.module_store import Level, ModuleStore
    from hakit.testing import sim as sim_module
    from hakit.testing.sim import MAX_NODES, Sim
except ModuleNotFoundError as exc:
    sys.exit(
        f"error: cannot import {exc.name}: build hakit first ('make build') and run the bench "
        "with its Python: .venv/bin/python bench/farm_scale.py (or 'make bench')"
    )

# Its own cluster name: the other benchmarks' "bench" may be up on the same machine.
SIM_NAME = "scale"
DEFAULT_SIZES = (4, 8, 16, 32)
# Two nodes are killed in turn: one must be left to answer.
MIN_SIZE = 3
GROUP = "web"
DELIVERY = "vmac_directed"
HOOK = "tc"

# What the issue asks for.
GOAL_UP_S = 15.0
GOAL_FALSE_LOSSES = 0
GOAL_CPU_PCT = 1.0
GOAL_RECOVERY_S = 1.0

START_TIMEOUT = 180.0  # `hakit start`, and the wait for UP (Ready) after it
SETTLE_TIMEOUT = 60.0  # from UP to every node's share of the buckets being its 1/N
# Once the shares settled, this long with nothing changing before anything is measured;
# it counts in the false losses' window.
QUIET = 3.0
CPU_SECONDS = 10.0
CONNECTIONS = 3000
# Source ports of the spread's connections: below the host's ephemeral range (32768..), so
# that no other connection of the host takes them, and each connection is a known flow
# that the recovery probes can replay.
SPREAD_FIRST_PORT = 20000
SPREAD_CONCURRENCY = 32
SPREAD_TIMEOUT = 2.0
# A spread drawn at random with the farm's exact shares deviates anyway: the median and
# 95th percentile of this many such draws are printed beside the measured one.
FAIR_DRAWS = 200
# Recovery: the probes run this long before the kill (every attempt must be answered),
# and after the last failed attempt this long (plus one attempt's limit) before the
# failures are taken as over; never recovered after RECOVERY_LIMIT.
BASELINE = 1.0
RECOVERED_AFTER = 3.0
RECOVERY_LIMIT = 15.0

LOST_RE = re.compile(r"Peer (\S+) lost\b")
ELECTED_RE = re.compile(r"elected node for ARP and unruled ports: (\S+)$")

SERVICE_FILE = "service.py"
START_BOTH = f"""\
#!/bin/sh
# The farm's application: a service answering each connection with this node's name, in a
# session of its own so that it outlives this script; its pid for stop_both.
setsid {shlex.quote(sys.executable)} "$SAFEUSERBIN/{SERVICE_FILE}" {harness.SERVICE_PORT} \\
    </dev/null >/dev/null 2>&1 &
echo $! > "$SAFEUSERVAR/service.pid"
"""
STOP_BOTH = """\
#!/bin/sh
# Returns once the service has exited, so that the module is stopped only when it is.
pidfile="$SAFEUSERVAR/service.pid"
[ -s "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
rm -f "$pidfile"
kill -TERM "$pid" 2>/dev/null || exit 0
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
"""


def secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"


# ---------------------------------------------------------------- one farm


class Farm:
    """The farm module of one size on node1..nodeN, driven with hakit's commands in the
    nodes and watched through each node's module store, read from the host.

    Reading the stores from here instead of running `hakit state` or `hakit logview` in
    each node: at 32 nodes one round of those commands (a Python start each) takes longer
    than what is measured. The store is what those commands read.
    """

    def __init__(self, sim: Sim, size: int, index: int) -> None:
        self.sim = sim
        self.size = size
        self.module = f"farm{size}"
        self.nodes = [f"node{i}" for i in range(1, size + 1)]
        # One VIP per size: no ARP entry of the host or gratuitous ARP of an earlier farm
        # concerns this one.
        self.vip = sim.spare_addr(0, index + 1)
        self.hakit = str(hakit_bin_dir() / "hakit")
        self._stores: dict[str, ModuleStore] = {}

    def run(self, node: str, *args: str, timeout: float = 120.0) -> str:
        return self.sim.exec(node, [self.hakit, *args], timeout=timeout).stdout

    def install(self, workdir: Path) -> None:
        files = {"start_both": START_BOTH, "stop_both": STOP_BOTH, SERVICE_FILE: harness.SERVICE}
        archive = harness.farm_archive(workdir, self.module, self.vip, DELIVERY,
                                       {GROUP: [(harness.SERVICE_PORT, "tcp", "on_port")]}, files, HOOK)
        first = self.nodes[0]
        self.run(first, "module", "install", "-m", self.module, str(archive))
        self.run(first, "-H", ",".join(self.nodes), "-E", self.module)

    def start_all(self) -> None:
        """`hakit -H ... start` from node1: every node starts at once, through its hakitd."""
        self.run(self.nodes[0], "-H", ",".join(self.nodes), "start", "-m", self.module,
                 timeout=START_TIMEOUT + 60)

    def stop(self, nodes: list[str]) -> None:
        self.run(nodes[0], "-H", ",".join(nodes), "stop", "-m", self.module, timeout=START_TIMEOUT + 60)

    def store(self, node: str) -> ModuleStore:
        if node not in self._stores:
            self._stores[node] = ModuleStore(self.sim.paths(node).module_db(self.module))
        return self._stores[node]

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def up_since(self, node: str, after: float) -> float | None:
        """When the node's module became UP (Ready), if it is and that was after `after`."""
        store = self.store(node)
        state, status = store.resource("module.state"), store.resource("module.status")
        if state is None or status is None or (state.value, status.value) != ("UP", "Ready"):
            return None
        since = max(state.since, status.since)
        return since if since >= after else None

    def wait_up(self, nodes: list[str], after: float) -> dict[str, float]:
        """When each node became UP (Ready), once all are."""
        found: dict[str, float] = {}

        def all_up() -> bool:
            for node in nodes:
                if node not in found and (t := self.up_since(node, after)) is not None:
                    found[node] = t
            return len(found) == len(nodes)

        harness.wait_until(all_up, START_TIMEOUT, lambda: f"{self.module} UP (Ready) on "
                           + ", ".join(self.describe(n) for n in nodes if n not in found))
        return found

    def describe(self, node: str) -> str:
        state = self.store(node).state()
        return f"{node} (is {' '.join(state) if state else 'never started'})"

    def share(self, node: str) -> tuple[float, float] | None:
        """The node's percentage of the group's buckets, and since when."""
        r = self.store(node).resource(f"vip.share.{GROUP}")
        return (float(r.value), r.since) if r is not None else None

    def wait_settled(self, nodes: list[str], after: float) -> float:
        """When the shares settled: every node owns its 1/N of the buckets (the table is
        exact to one bucket, the resource has one decimal)."""
        want = 100.0 / len(nodes)
        got: dict[str, tuple[float, float] | None] = {}

        def settled() -> bool:
            got.update({n: self.share(n) for n in nodes})
            return all(s is not None and abs(s[0] - want) <= 0.1 and s[1] >= after for s in got.values())

        harness.wait_until(settled, SETTLE_TIMEOUT, lambda: f"every share of {self.module} at {want:.1f} % "
                           + "(" + ", ".join(f"{n} {s[0] if s else '-'}" for n, s in got.items()) + ")")
        return max(s[1] for s in got.values() if s is not None)

    def event_lines(self, node: str, pattern: re.Pattern[str], since: float,
                    until: float = float("inf")) -> list[tuple[float, re.Match[str]]]:
        out = []
        for line in self.store(node).logs({Level.EVENT}):
            m = pattern.match(line.message)
            if m and since <= line.at <= until:
                out.append((line.at, m))
        return out

    def losses(self, nodes: Iterable[str], windows: list[tuple[float, float]]) -> list[str]:
        """The 'Peer X lost' lines of the nodes' logs within the windows, as 'node: X'."""
        return [f"{node}: {m.group(1)}" for node in nodes for since, until in windows
                for _, m in self.event_lines(node, LOST_RE, since, until)]

    def elected(self, nodes: list[str]) -> str:
        """The node the given nodes last logged as elected, once they all agree."""
        seen: dict[str, str | None] = {}

        def agreed() -> bool:
            for node in nodes:
                lines = self.event_lines(node, ELECTED_RE, 0.0)
                seen[node] = lines[-1][1].group(1) if lines else None
            return len(set(seen.values())) == 1 and None not in seen.values()

        harness.wait_until(agreed, SETTLE_TIMEOUT, lambda: f"{self.module}'s nodes to agree on the elected "
                           f"node ({', '.join(f'{n}: {e}' for n, e in seen.items())})")
        return str(next(iter(seen.values())))

    def module_pid(self, node: str) -> int:
        """The module process: hakitd's child running `-m hakit.module.process farmN`."""
        for pid in (self.sim.cgroup / node / "cgroup.procs").read_text().split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            if b"hakit.module.process" in argv and self.module.encode() in argv:
                return int(pid)
        raise HakitError(f"{node}: no module process of {self.module}")


# ---------------------------------------------------------------- CPU


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    # The command name, in parentheses, may hold spaces: count the fields after it.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def measure_cpu(pids: Mapping[str, int], seconds: float) -> dict[str, float]:
    """Each process's CPU over `seconds`, in % of one core."""
    began, before = time.monotonic(), {n: cpu_seconds(p) for n, p in pids.items()}
    time.sleep(seconds)
    after = {n: cpu_seconds(p) for n, p in pids.items()}
    elapsed = time.monotonic() - began
    return {n: 100.0 * (after[n] - before[n]) / elapsed for n in pids}


# ---------------------------------------------------------------- spread


def probe_ports(vip: str, ports: Iterable[int]) -> dict[int, str | None]:
    """Which node answers a new connection from each source port (None: none did); ports
    taken on this host are left out."""

    async def run() -> dict[int, str | None]:
        limit = asyncio.Semaphore(SPREAD_CONCURRENCY)

        async def one(port: int) -> tuple[int, str | None] | None:
            async with limit:
                try:
                    return port, await harness.ask_name(vip, harness.SERVICE_PORT, port, SPREAD_TIMEOUT)
                except harness.PortBusy:
                    return None

        return dict(r for r in await asyncio.gather(*(one(p) for p in ports)) if r is not None)

    return asyncio.run(run())


def max_deviation(counts: Iterable[int], n: int) -> float:
    """max |share - 1/n| / (1/n) over the n nodes."""
    values = list(counts)
    total = sum(values)
    values += [0] * (n - len(values))
    return max(abs(c / total - 1 / n) * n for c in values)


def fair_deviation(connections: int, n: int) -> tuple[float, float]:
    """The median and 95th percentile of max_deviation for connections thrown at random
    on n equal shares: what sampling alone gives."""
    rng = random.Random(n)
    draws = []
    for _ in range(FAIR_DRAWS):
        counts = [0] * n
        for _ in range(connections):
            counts[rng.randrange(n)] += 1
        draws.append(max_deviation(counts, n))
    draws.sort()
    return statistics.median(draws), draws[int(0.95 * len(draws))]


# ---------------------------------------------------------------- recovery


@dataclass(frozen=True)
class Recovery:
    seconds: float | None  # None: new connections still failed RECOVERY_LIMIT after the kill
    failed: int  # attempts begun after the kill that got no answer
    failed_victim_flows: int  # of those, from the victim's flows
    attempts: int
    first_failure: float | None  # when the first failed attempt began, after the kill
    failed_before: list[tuple[float, int | None]]  # before the kill (when, from which port)
    detected: float | None  # median, over the survivors, of when they logged the victim lost
    kill_call: float  # how long sim.kill took (its processes die first, then its links go down)


def alternate(ports: list[int]) -> Callable[[], int | None]:
    """Every other attempt from one of `ports` in turn, the others from any port."""
    cycle = itertools.cycle(ports)
    turn = itertools.cycle((True, False))
    return lambda: next(cycle) if next(turn) else None


def measure_recovery(farm: Farm, victim: str, flows: list[int], survivors: list[str]) -> Recovery:
    """Kill `victim` while a client connects every PROBE_INTERVAL, every other time from
    one of the victim's flows (a source port it answered just before).

    Recovery is measured to the end of the last failure window: from the kill to the
    beginning of the first attempt that follows the last failed one (an attempt fails when
    it gets no answer within PROBE_TIMEOUT; only attempts begun after the kill count).
    0 if none failed. The failures are taken as over once RECOVERED_AFTER seconds of
    attempts have all been answered. Half the attempts replay the victim's flows, whose
    buckets have no owner until the survivors take them over: so the last failure is
    seen within two attempts of the end, at any farm size, where connections from random
    ports would hit the victim's 1/N only now and then.
    """
    with harness.Prober(farm.vip, harness.SERVICE_PORT, alternate(flows)) as probe:
        time.sleep(BASELINE)
        # The lock of every simulated cluster of the machine (another one being built holds
        # it for seconds): taken first, so that the kill follows the time taken at once.
        with sim_module._LOCK:
            killed_at, killed_wall = time.monotonic(), time.time()
            farm.sim.kill(victim)
            kill_call = time.monotonic() - killed_at
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            failed = [a.at for a in list(probe.attempts) if a.node is None and a.at >= killed_at]
            if now - max(failed, default=killed_at) >= RECOVERED_AFTER + harness.PROBE_TIMEOUT:
                break
            if now - killed_at > RECOVERY_LIMIT + harness.PROBE_TIMEOUT:
                break
    attempts = sorted(probe.attempts, key=lambda a: a.at)
    after = [a for a in attempts if a.at >= killed_at]
    failures = [a for a in after if a.node is None]
    seconds: float | None = 0.0
    if failures:
        last = failures[-1].at
        answered = next((a.at for a in after if a.at > last and a.node is not None), None)
        seconds = answered - killed_at if answered is not None else None
        if seconds is not None and seconds > RECOVERY_LIMIT:
            seconds = None
    lost = [at for node in survivors for at, m in farm.event_lines(node, LOST_RE, killed_wall)
            if m.group(1) == victim]
    return Recovery(
        seconds=seconds,
        failed=len(failures),
        failed_victim_flows=sum(a.port is not None for a in failures),
        attempts=len(after),
        first_failure=failures[0].at - killed_at if failures else None,
        failed_before=[(a.at - killed_at, a.port) for a in attempts if a.node is None and a.at < killed_at],
        detected=statistics.median(lost) - killed_wall if lost else None,
        kill_call=kill_call,
    )


def flows_of(farm: Farm, node: str, spread: Mapping[int, str | None]) -> list[int]:
    """Source ports whose connections `node` answers now: of those it answered in the
    spread, as a change of members since (the first kill) may have moved some."""
    again = probe_ports(farm.vip, [p for p, n in spread.items() if n == node])
    flows = [p for p, n in again.items() if n == node]
    if not flows:
        raise HakitError(f"no connection of the spread reaches {node} any more")
    return flows


# ---------------------------------------------------------------- one size


@dataclass(frozen=True)
class Goal:
    label: str
    limit: float
    below: bool  # met when the figure is below the limit; otherwise when equal to it

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return value < self.limit if self.below else value == self.limit

    def show(self, value: float | None, unit: str) -> str:
        verdict = "met" if self.met(value) else "MISSED"
        if not self.below:
            return f"goal {self.limit:g}: {verdict}"
        ratio = f", {value / self.limit:.2f} of it" if value is not None else ""
        return f"goal < {self.limit:g}{unit}{ratio}: {verdict}"


GOALS = {
    "up_sequential_s": Goal("up, one after the other", GOAL_UP_S, True),
    "up_all_at_once_s": Goal("up, all at once", GOAL_UP_S, True),
    "false_losses": Goal("false peer losses", GOAL_FALSE_LOSSES, False),
    "cpu_pct_max": Goal("CPU per module process", GOAL_CPU_PCT, True),
    "recovery_kill_s": Goal("recovery after a kill", GOAL_RECOVERY_S, True),
    "recovery_kill_elected_s": Goal("recovery after the elected node's kill", GOAL_RECOVERY_S, True),
}


def say(text: str) -> None:
    print(text, flush=True)


def figure(label: str, shown: str, note: str = "", goal: str = "") -> None:
    say(f"  {label:<34} {shown}" + (f"  ({note})" if note else "") + (f"  [{goal}]" if goal else ""))


def revive_killed(sim: Sim, nodes: list[str]) -> None:
    """Nodes killed by a smaller size's farm boot again (its farm never starts at boot)."""
    for node in sim.status().nodes:
        if node.name in nodes and node.state == "killed":
            sim.revive(node.name)


def measure_size(sim: Sim, workdir: Path, size: int, index: int, args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    farm = Farm(sim, size, index)
    revive_killed(sim, farm.nodes)
    say(f"== {size} nodes: module {farm.module}, VIP {farm.vip}")
    farm.install(workdir)
    try:
        return _measure(farm, args) | {"run_s": round(time.monotonic() - began, 1)}
    finally:
        farm.close()


def _measure(farm: Farm, args: argparse.Namespace) -> dict[str, Any]:
    nodes, n = farm.nodes, farm.size
    r: dict[str, Any] = {"nodes": n}

    # One after the other, as an operator's loop would: each `hakit start` returns once
    # its node is UP or its state is known.
    t0 = time.time()
    for node in nodes:
        farm.run(node, "start", "-m", farm.module, timeout=START_TIMEOUT + 60)
        farm.wait_up([node], t0)
    up = farm.wait_up(nodes, t0)
    settled = farm.wait_settled(nodes, t0)
    time.sleep(QUIET)
    windows = [(t0, time.time())]
    r["up_sequential_s"] = round(max(up.values()) - t0, 3)
    r["settled_sequential_s"] = round(settled - t0, 3)
    steps = [b - a for a, b in itertools.pairwise(sorted(up.values()))]
    figure("up, one after the other", secs(r["up_sequential_s"]),
           f"shares settled at {secs(r['settled_sequential_s'])}; "
           f"{secs(statistics.median(steps) if steps else None)} between two nodes, median",
           GOALS["up_sequential_s"].show(r["up_sequential_s"], " s"))

    farm.stop(nodes)
    # The stops' last heartbeats must not land in the next window.
    time.sleep(Heart().timeout * 2)

    t0 = time.time()
    farm.start_all()
    up = farm.wait_up(nodes, t0)
    settled = farm.wait_settled(nodes, t0)
    time.sleep(QUIET)
    r["up_all_at_once_s"] = round(max(up.values()) - t0, 3)
    r["settled_all_at_once_s"] = round(settled - t0, 3)
    # Which nodes came last tells a slow start (the machine's two cores shared by N
    # module processes starting) from a slow join.
    by_time = sorted(up.items(), key=lambda item: item[1])
    r["up_all_at_once_nodes_s"] = {node: round(t - t0, 3) for node, t in by_time}
    figure("up, all at once", secs(r["up_all_at_once_s"]),
           f"the first node UP at {secs(min(up.values()) - t0)}; shares settled at "
           f"{secs(r['settled_all_at_once_s'])}",
           GOALS["up_all_at_once_s"].show(r["up_all_at_once_s"], " s"))

    cpu = measure_cpu({node: farm.module_pid(node) for node in nodes}, args.cpu_seconds)
    r["cpu_pct_median"] = round(statistics.median(cpu.values()), 3)
    r["cpu_pct_max"] = round(max(cpu.values()), 3)
    busiest = max(cpu, key=lambda k: cpu[k])
    figure("CPU per module process", f"median {r['cpu_pct_median']:.2f} %, max {r['cpu_pct_max']:.2f} %",
           f"of a core over {args.cpu_seconds:g} s; the max on {busiest}",
           GOALS["cpu_pct_max"].show(r["cpu_pct_max"], " %"))

    for node in nodes:
        # (a node that just came UP under the load of 31 others may take a while to run it)
        harness.wait_listening(farm.sim.addr(node), harness.SERVICE_PORT, timeout=60.0)
    spread = probe_ports(farm.vip, range(SPREAD_FIRST_PORT, SPREAD_FIRST_PORT + args.connections))
    answered = [node for node in spread.values() if node is not None]
    counts = {node: answered.count(node) for node in nodes}
    fair = fair_deviation(len(answered), n) if answered else (None, None)
    r["spread_max_dev"] = round(max_deviation(counts.values(), n), 4) if answered else None
    r["spread_fair_dev"], r["spread_fair_dev_p95"] = (round(f, 4) if f is not None else None for f in fair)
    r["spread_failed"] = len(spread) - len(answered)
    r["spread_counts"] = counts
    figure(f"spread of {len(spread):,} connections", f"max deviation from 1/{n}: {r['spread_max_dev']}",
           f"fair random draws: median {r['spread_fair_dev']}, 95 % below {r['spread_fair_dev_p95']}; "
           f"{r['spread_failed']} unanswered")
    say("    " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    # Every Peer ... lost since the all-at-once start was a false one: nothing failed yet.
    windows.append((t0, time.time()))
    losses = farm.losses(nodes, windows)
    r["false_losses"] = len(losses)
    r["false_losses_sequential"] = len(farm.losses(nodes, windows[:1]))
    shown = ", ".join(losses[:8]) + (", ..." if len(losses) > 8 else "")
    figure("false peer losses", str(len(losses)), shown, GOALS["false_losses"].show(len(losses), ""))

    elected = farm.elected(nodes)
    victim = next(node for node in reversed(nodes) if node != elected)
    survivors = [node for node in nodes if node != victim]
    for key, killed in (("recovery_kill", victim), ("recovery_kill_elected", elected)):
        if killed == elected:
            elected_now = farm.elected(survivors)
            if elected_now != elected:
                raise HakitError(f"{elected} was elected, now {elected_now}: killing {victim} changed it")
            survivors = [node for node in survivors if node != elected]
        rec = measure_recovery(farm, killed, flows_of(farm, killed, spread), survivors)
        r[f"{key}_s"] = round(rec.seconds, 3) if rec.seconds is not None else None
        r[f"{key}_failed"] = rec.failed
        r[f"{key}_detected_s"] = round(rec.detected, 3) if rec.detected is not None else None
        what = f"{killed} (elected)" if killed == elected else killed
        figure(f"recovery after killing {what}", secs(rec.seconds),
               f"{rec.failed} of {rec.attempts} attempts unanswered, {rec.failed_victim_flows} of them "
               f"on its flows, the first {secs(rec.first_failure)} after the kill; its loss logged after "
               f"{secs(rec.detected)}", GOALS[key + "_s"].show(rec.seconds, " s"))
        if rec.failed_before:
            say(f"    warning: {len(rec.failed_before)} attempts unanswered before the kill: "
                + ", ".join(f"{at:+.3f} s from port {port or 'any'}" for at, port in rec.failed_before))
        r[f"{key}_failed_before"] = len(rec.failed_before)
        r[f"{key}_call_s"] = round(rec.kill_call, 3)
    r["elected"], r["killed"] = elected, victim
    farm.stop(survivors)
    r["goals"] = {k: g.met(r.get(k)) for k, g in GOALS.items()}
    return r


# ---------------------------------------------------------------- the whole run


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: comma-separated numbers of nodes") from None
    if not sizes or sizes[0] < MIN_SIZE or sizes[-1] > MAX_NODES:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: from {MIN_SIZE} to {MAX_NODES} nodes")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES),
                   help=f"farm sizes, comma-separated (default {','.join(map(str, DEFAULT_SIZES))})")
    p.add_argument("--connections", type=int, default=CONNECTIONS,
                   help=f"new connections of the spread (default {CONNECTIONS})")
    p.add_argument("--cpu-seconds", type=float, default=CPU_SECONDS,
                   help=f"window of the CPU measurement (default {CPU_SECONDS:g})")
    args = p.parse_args(argv)
    # The spread's ports stay below the usual ephemeral range (32768..).
    if not 1 <= args.connections <= 12000 or args.cpu_seconds <= 0:
        p.error("--connections must be 1 to 12000 and --cpu-seconds positive")
    return args


def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    harness.require()
    heart = Heart()
    results = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hakit-bench-") as tmp, \
            harness.simulated_cluster(max(args.sizes), SIM_NAME) as sim:
        say(f"simulated cluster of {max(args.sizes)} nodes up in {time.monotonic() - began:.1f} s "
            f"(heartbeat pulse {heart.pulse:g} s, timeout {heart.timeout:g} s; {DELIVERY}, hook {HOOK})")
        for index, size in enumerate(args.sizes):
            result = measure_size(sim, Path(tmp), size, index, args)
            result |= {"heartbeat_pulse_s": heart.pulse, "heartbeat_timeout_s": heart.timeout,
                       "connections": args.connections, "cpu_seconds": args.cpu_seconds}
            say(f"{size} nodes measured in {result['run_s']:.0f} s; goals: "
                + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in result["goals"].items()))
            say(json.dumps(result))
            results.append(result)
    say(f"done in {time.monotonic() - began:.0f} s, building and removing the cluster included")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.guarded(lambda: bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
