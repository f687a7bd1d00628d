#!/usr/bin/env python3
"""Client-visible failover of a virtual IP: hakit's mirror module beside keepalived (VRRP).

One simulated cluster (node1, node2, the host as client), the same crash for both: node1
holds the VIP, every process of node1 dies at once (`sim kill`), and a client connecting
to the VIP every 10 ms measures the time from node1's last answer to node2's first.
keepalived's advertisement interval is chosen so that its master-down interval,
3 × advert_int + skew (RFC 5798), equals hakit's default heartbeat timeout: both detect
the crash after the same silence, and the difference is what each does afterwards.

The last line printed is one JSON object (hakit_outage_s, keepalived_outage_s, ratio, ...).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

try:
    import harness
    from hakit.config.module_model import Heart
    from hakit.config.safe_archive import pack
    from hakit.errors import HakitError
    from hakit.module.scripts import hakit_bin_dir
    from hakit.testing.sim import Sim
except ModuleNotFoundError as exc:
    sys.exit(
        f"error: cannot import {exc.name}: build hakit first ('make build') and run the bench "
        "with its Python: .venv/bin/python bench/failover.py (or 'make bench')"
    )

MASTER, BACKUP = "node1", "node2"
# After the crash, node2 must answer within this; longer means it never will.
RECOVERY_TIMEOUT = 15.0
# Back to the initial roles after a revive (hakitd and the module start, reintegration).
RESTORE_TIMEOUT = 60.0
# node1 must have answered alone this long before it is killed: a settled cluster.
SETTLED = 0.5
# Then a random pause, longer than a heartbeat or advertisement period, so that the crash
# falls anywhere in the cycle: the silence already elapsed at the crash counts towards
# detection, and a fixed phase would favour one system.
PHASE_SPREAD = 1.0


class Contender(ABC):
    """One HA system in the comparison, driven through the same rounds."""

    name: str

    def __init__(self, sim: Sim, workdir: Path) -> None:
        self.sim = sim
        self.workdir = workdir

    @property
    @abstractmethod
    def vip(self) -> str: ...

    @abstractmethod
    def start(self) -> None:
        """Start on both nodes; return once MASTER holds the VIP and BACKUP stands by."""

    @abstractmethod
    def restore(self) -> None:
        """MASTER was revived: bring both nodes back to the initial roles."""

    @abstractmethod
    def crashed(self, node: str) -> None:
        """node was killed (its processes are gone)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop on every live node."""

    def params(self) -> dict[str, Any]:
        """Timing parameters of its own, for the report."""
        return {}


# ---------------------------------------------------------------- keepalived

MASTER_PRIORITY = 200
VRID = 51


def master_down(advert: float, priority: int) -> float:
    return 3 * advert + (256 - priority) * advert / 256


def vrrp_timing(timeout: float) -> tuple[float, int]:
    """VRRPv3 advertisement interval (a whole number of centiseconds, the protocol's unit) and
    backup priority whose master-down interval is closest to timeout."""
    best: tuple[float, float, int] | None = None
    for centis in range(1, 4096):
        advert = centis / 100
        skew = timeout - 3 * advert
        if skew <= 0:
            break
        priority = round(256 - 256 * skew / advert)
        if 1 <= priority < MASTER_PRIORITY:
            error = abs(master_down(advert, priority) - timeout)
            if best is None or error < best[0] - 1e-9:
                best = (error, advert, priority)
    if best is None:
        raise HakitError(f"no VRRP advertisement interval gives a master-down interval of {timeout:g}s")
    return best[1], best[2]


class Keepalived(Contender):
    name = "keepalived"

    def __init__(self, sim: Sim, workdir: Path, timeout: float) -> None:
        super().__init__(sim, workdir)
        self.advert, self.backup_priority = vrrp_timing(timeout)
        self.procs = harness.NodeProcesses(sim)

    @property
    def vip(self) -> str:
        return self.sim.spare_addr(0, 2)

    def _conf(self, node: str) -> Path:
        priority = MASTER_PRIORITY if node == MASTER else self.backup_priority
        conf = self.workdir / f"keepalived-{node}.conf"
        conf.write_text(
            "global_defs {\n"
            f"    router_id hakit_bench_{node}\n"
            "    vrrp_version 3\n"
            "}\n"
            "vrrp_instance hakit_bench {\n"
            "    state BACKUP\n"
            "    interface eth0\n"
            f"    virtual_router_id {VRID}\n"
            f"    priority {priority}\n"
            f"    advert_int {self.advert:.2f}\n"
            "    virtual_ipaddress {\n"
            f"        {self.vip}/24 dev eth0\n"
            "    }\n"
            "}\n"
        )
        return conf

    def _start(self, node: str) -> None:
        pids = [self.workdir / f"keepalived-{node}{part}.pid" for part in ("", "-vrrp")]
        for pid in pids:
            # A pid file left by the crash may name a pid reused since: keepalived would not start.
            pid.unlink(missing_ok=True)
        argv = [
            "keepalived", "--dont-fork", "--vrrp", "--log-console", "--no-syslog", "--log-detail",
            "--use-file", str(self._conf(node)), "--pid", str(pids[0]), "--vrrp_pid", str(pids[1]),
        ]  # fmt: skip
        self.procs.start(node, argv, log=self.workdir / f"keepalived-{node}.log")

    def start(self) -> None:
        for node in (MASTER, BACKUP):
            self._start(node)

    def restore(self) -> None:
        # Higher priority and preemption (keepalived's default) give MASTER the VIP back.
        self._start(MASTER)

    def crashed(self, node: str) -> None:
        self.procs.reap(node)

    def stop(self) -> None:
        self.procs.stop()

    def params(self) -> dict[str, Any]:
        return {
            "vrrp_version": 3,
            "vrrp_advert_int_s": self.advert,
            "vrrp_master_priority": MASTER_PRIORITY,
            "vrrp_backup_priority": self.backup_priority,
            "vrrp_master_down_s": round(master_down(self.advert, self.backup_priority), 6),
        }


# ---------------------------------------------------------------- hakit

MODULE = "bench"


class Hakit(Contender):
    name = "hakit"

    def __init__(self, sim: Sim, workdir: Path) -> None:
        super().__init__(sim, workdir)
        self.hakit = str(hakit_bin_dir() / "hakit")

    @property
    def vip(self) -> str:
        return self.sim.spare_addr(0, 1)

    def _archive(self) -> Path:
        src = self.workdir / "module"
        (src / "conf").mkdir(parents=True, exist_ok=True)
        (src / "bin").mkdir(exist_ok=True)  # no scripts: the service runs outside the module
        (src / "conf" / "userconfig.xml").write_text(
            '<safe>\n  <service mode="mirror">\n'
            '    <heart><heartbeat name="default"/></heart>\n'
            "    <vip><interface_list><interface><real_interface>\n"
            f'      <virtual_addr addr="{self.vip}" where="one_side_alias"/>\n'
            "    </real_interface></interface></interface_list></vip>\n"
            "  </service>\n</safe>\n"
        )
        # Both nodes must authenticate each other's heartbeats: the same key on each.
        (src / "conf" / "key").write_text(f"{'5a' * 32}\n")
        out = self.workdir / f"{MODULE}.safe"
        pack(src, out)
        return out

    def _run(self, node: str, *args: str) -> str:
        return self.sim.exec(node, [self.hakit, *args], timeout=120).stdout

    def _state(self, node: str) -> str:
        out = self.sim.exec(node, [self.hakit, "state", "-m", MODULE], check=False).stdout
        m = re.match(rf"{MODULE}: (\S+) \(", out)
        return m.group(1) if m else "?"

    def _wait_roles(self, master: str, backup: str) -> None:
        want = {MASTER: master, BACKUP: backup}
        harness.wait_until(
            lambda: all(self._state(n) == s for n, s in want.items()),
            RESTORE_TIMEOUT,
            lambda: "hakit roles "
            + ", ".join(f"{n} {s} (is {self._state(n)})" for n, s in want.items()),
        )

    def start(self) -> None:
        archive = self._archive()
        for node in (MASTER, BACKUP):
            self._run(node, "module", "install", "-m", MODULE, "-M", "1", str(archive))
        self._run(MASTER, "prim", "-m", MODULE)
        self._run(BACKUP, "start", "-m", MODULE)
        self._wait_roles("PRIM", "SECOND")

    def restore(self) -> None:
        # The revived node comes back as secondary; a swap gives it the primary role back.
        self._run(MASTER, "start", "-m", MODULE)
        self._wait_roles("SECOND", "PRIM")
        self._run(BACKUP, "swap", "-m", MODULE)
        self._wait_roles("PRIM", "SECOND")

    def crashed(self, node: str) -> None:
        pass  # hakit's processes on node were children of the node, not of the bench

    def stop(self) -> None:
        for node in (MASTER, BACKUP):
            self.sim.exec(node, [self.hakit, "stop", "-m", MODULE], check=False, timeout=120)


# ---------------------------------------------------------------- rounds


def wait_served(probe: harness.Prober, contender: Contender) -> None:
    harness.wait_until(
        lambda: probe.served_by(MASTER, SETTLED),
        RESTORE_TIMEOUT,
        lambda: f"{contender.name}: the VIP {contender.vip} answered by {MASTER} alone for {SETTLED:g}s "
        f"(last answers: {', '.join(a.node for a in probe.answers[-5:]) or 'none'})",
    )


def run_rounds(
    sim: Sim, services: harness.NodeProcesses, contender: Contender, rounds: int
) -> list[float | None]:
    outages: list[float | None] = []
    with harness.Prober(contender.vip) as probe:
        try:
            contender.start()
            wait_served(probe, contender)
            for r in range(1, rounds + 1):
                time.sleep(random.uniform(0, PHASE_SPREAD))
                crash_at = time.monotonic()
                sim.kill(MASTER)
                services.reap(MASTER)
                contender.crashed(MASTER)
                outage = probe.outage(MASTER, BACKUP, crash_at, RECOVERY_TIMEOUT)
                outages.append(outage)
                shown = (
                    f"{outage:.3f} s" if outage is not None
                    else f"none: {BACKUP} did not answer within {RECOVERY_TIMEOUT:g} s"
                )
                print(f"{contender.name:<10} round {r}/{rounds}: outage {shown}", flush=True)
                sim.revive(MASTER)
                services.start(MASTER, harness.SERVICE_ARGV)
                contender.restore()
                wait_served(probe, contender)
        finally:
            contender.stop()
    return outages


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="crashes per system (default 5)")
    p.add_argument("--only", choices=("hakit", "keepalived"), help="measure one system only")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def bench(args: argparse.Namespace) -> dict[str, Any]:
    heart = Heart()  # hakit's defaults, as a user who changes nothing gets them
    names = [n for n in ("keepalived", "hakit") if args.only in (None, n)]
    harness.require(commands=("keepalived",) if "keepalived" in names else ())
    outages: dict[str, list[float | None]] = {}
    params: dict[str, Any] = {
        "heartbeat_pulse_s": heart.pulse,
        "heartbeat_timeout_s": heart.timeout,
        "probe_interval_s": harness.PROBE_INTERVAL,
        "probe_timeout_s": harness.PROBE_TIMEOUT,
    }
    with tempfile.TemporaryDirectory(prefix="hakit-bench-") as tmp, harness.simulated_cluster(2) as sim:
        services = harness.NodeProcesses(sim)
        try:
            for node in (MASTER, BACKUP):
                services.start(node, harness.SERVICE_ARGV)
            for name in names:
                workdir = Path(tmp) / name
                workdir.mkdir()
                contender: Contender = (
                    Keepalived(sim, workdir, heart.timeout)
                    if name == "keepalived"
                    else Hakit(sim, workdir)
                )
                params.update(contender.params())
                outages[name] = run_rounds(sim, services, contender, args.rounds)
        finally:
            services.stop()
    medians = {n: harness.median(outages.get(n, [])) for n in ("hakit", "keepalived")}
    hk, ka = medians["hakit"], medians["keepalived"]
    return {
        "hakit_outage_s": _round(hk),
        "keepalived_outage_s": _round(ka),
        "ratio": _round(hk / ka) if hk is not None and ka else None,
        "rounds": args.rounds,
        "hakit_outages_s": [_round(v) for v in outages.get("hakit", [])],
        "keepalived_outages_s": [_round(v) for v in outages.get("keepalived", [])],
        "failed_rounds": {n: sum(v is None for v in vs) for n, vs in outages.items()},
        **params,
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = harness.guarded(lambda: bench(args))
    shown = {
        n: f"{result[f'{n}_outage_s']:.3f} s" if result[f"{n}_outage_s"] is not None else "-"
        for n in ("hakit", "keepalived")
    }
    ratio = f"{result['ratio']:.2f}" if result["ratio"] is not None else "-"
    print(f"median outage over {args.rounds} rounds: hakit {shown['hakit']}, "
          f"keepalived {shown['keepalived']}, ratio hakit/keepalived {ratio}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
