#!/usr/bin/env python3
"""Farm load balancing in eBPF beside haproxy: new connections per second, the filter's
per-packet cost, the share of flows a leaving node moves, and established connections
broken while a node leaves and joins.

One simulated cluster of five nodes: node1..node3 form a farm module (one VIP, nginx from
Debian started and stopped by the module's scripts), node4 is the client (wrk, a UDP
sender, Python clients), node5 runs haproxy (Debian, TCP mode) in front of the same
three nginx.

The last line printed is one JSON object (conn_ratio_vs_haproxy, pps_ratio, moved_share,
broken, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import harness
    from hakit.errors import HakitError
    from hakit.module.scripts import hakit_bin_dir
    from hakit.testing.sim import Sim
except ModuleNotFoundError as exc:
    sys.exit(
        f"error: cannot import {exc.name}: build hakit first ('make build') and run the bench "
        "with its Python: .venv/bin/python bench/farm.py (or 'make bench')"
    )

FARM_NODES = ("node1", "node2", "node3")
CLIENT, PROXY = "node4", "node5"
LEAVER = "node3"
MODULE = "farm"
HTTP_PORT, UDP_PORT = 80, 9999
MODES = {"directed": "vmac_directed", "flood": "vmac_invisible"}
# What the issue asks for.
TARGET_CONN_RATIO = 2.0
TARGET_PPS_RATIO = 0.95
TARGET_MOVED = 1 / 3 + 0.02

# The node's private /var/lib/hakit: nginx's configuration, pid, logs and temporary files.
NGINX_DIR = "/var/lib/hakit/bench-nginx"
NGINX_CONF = f"""\
worker_processes 1;
pid {NGINX_DIR}/nginx.pid;
error_log {NGINX_DIR}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {NGINX_DIR}/body;
    proxy_temp_path {NGINX_DIR}/proxy;
    fastcgi_temp_path {NGINX_DIR}/fastcgi;
    uwsgi_temp_path {NGINX_DIR}/uwsgi;
    scgi_temp_path {NGINX_DIR}/scgi;
    # The keep-alive clients of the leave/join test must never be closed by nginx.
    keepalive_timeout 600s;
    keepalive_requests 1000000;
    server {{
        listen {HTTP_PORT};
        location / {{
            default_type text/plain;
            return 200 "$hostname\\n";
        }}
    }}
}}
"""
START_BOTH = f"""\
#!/bin/sh
# The farm's application: nginx from this node's private directory (it forks and returns).
exec nginx -c {NGINX_DIR}/nginx.conf -e {NGINX_DIR}/error.log
"""
STOP_BOTH = f"""\
#!/bin/sh
# Returns once nginx has exited, so that the module is stopped only when its service is.
pidfile={NGINX_DIR}/nginx.pid
[ -s "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
kill -TERM "$pid" 2>/dev/null || exit 0
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
"""

# Every request of wrk opens a new TCP connection: the figure is new connections per second.
WRK_CONNECTIONS = 64

# UDP sender and sink, built at bench time: Python could not send fast enough to load the
# receiving node.
UDP_TOOL = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define PAYLOAD 64

static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
	(void)sig;
	stopping = 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	static char bufs[BATCH][2048];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	struct sockaddr_in sa = { .sin_family = AF_INET };
	unsigned long long count = 0;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int sending = argc == 5 && !strcmp(argv[1], "send");

	if (!sending && !(argc == 3 && !strcmp(argv[1], "sink"))) {
		fprintf(stderr, "usage: %s send ADDR PORT SECONDS | sink PORT\n", argv[0]);
		return 2;
	}
	if (fd < 0)
		die("socket");
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = sending ? PAYLOAD : sizeof(bufs[i]);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	if (sending) {
		double seconds = atof(argv[4]), start, t;

		if (inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1)
			die("inet_pton");
		sa.sin_port = htons(atoi(argv[3]));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			die("connect");
		start = t = now();
		while (t - start < seconds) {
			int n = sendmmsg(fd, msgs, BATCH, 0);

			/* A full queue or an ICMP error from an earlier datagram: go on sending. */
			if (n < 0 && errno != ENOBUFS && errno != ECONNREFUSED && errno != EAGAIN)
				die("sendmmsg");
			if (n > 0)
				count += n;
			t = now();
		}
		printf("%llu %.6f\n", count, t - start);
		return 0;
	}
	{
		/* No SA_RESTART: SIGTERM ends the blocking recvmmsg. */
		struct sigaction act = { .sa_handler = on_term };
		int size = 16 << 20;

		sigaction(SIGTERM, &act, NULL);
		sa.sin_port = htons(atoi(argv[2]));
		setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			die("bind");
		printf("ready\n");
		fflush(stdout);
		while (!stopping) {
			int n = recvmmsg(fd, msgs, BATCH, 0, NULL);

			if (n > 0)
				count += n;
			else if (n < 0 && errno != EINTR)
				die("recvmmsg");
		}
		printf("%llu\n", count);
	}
	return 0;
}
"""

# Python clients run in the client node.
#   flows VIP FIRST COUNT: one connection from each source port FIRST.., one request each;
#     prints {port: node that answered (null: none)}.  The connection ends with a reset,
#     so no TIME_WAIT keeps the port from the next probe of the same flow.
#   keepalive VIP COUNT INTERVAL LIMIT: COUNT keep-alive connections, a request on each every
#     INTERVAL s; a connection that fails or waits LIMIT s for a reply is broken (after a
#     timeout it waits LATE_LIMIT s more, to tell a late reply from none).  Commands
#     on stdin, one JSON line answered each: "open" (re)opens the connections not alive,
#     "report" gives the breaks since the last report and the live connections' nodes,
#     "stop" ends.
CLIENTS = r"""
import asyncio, json, socket, struct, sys, time
import uvloop

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
LATE_LIMIT = 10.0


async def reply(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return (await reader.readexactly(length)).decode().strip()


async def flows(vip, first, count, limit=2.0):
    answers = {}
    for port in range(first, first + count):
        writer = None
        try:
            async with asyncio.timeout(limit):
                reader, writer = await asyncio.open_connection(vip, 80, local_addr=("0.0.0.0", port))
                writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.write(REQUEST)
                answers[port] = await reply(reader)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            answers[port] = None
        finally:
            if writer is not None:
                writer.close()
    print(json.dumps(answers), flush=True)


class Keepalive:
    def __init__(self, vip, count, interval, limit):
        self.vip, self.interval, self.limit = vip, interval, limit
        self.node = [None] * count  # None: not alive
        self.port = [None] * count
        self.tasks = [None] * count
        self.stalled = set()  # connections still waiting to see whether a late reply comes
        self.breaks = []

    async def late(self, reader, sent):
        # Seconds after the request that a reply finally came, None if it never did.
        try:
            async with asyncio.timeout(LATE_LIMIT):
                if await reader.read(1):
                    return round(time.monotonic() - sent, 3)
        except (OSError, TimeoutError):
            pass
        return None

    async def run(self, i, first):
        writer = None
        try:
            async with asyncio.timeout(self.limit):
                reader, writer = await asyncio.open_connection(self.vip, 80)
            self.port[i] = writer.get_extra_info("sockname")[1]
            while True:
                writer.write(REQUEST)
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(self.limit):
                        node = await reply(reader)
                except TimeoutError:
                    at = time.monotonic()
                    self.stalled.add(i)
                    late = await self.late(reader, sent)
                    self.broken(i, at, f"no reply in {self.limit:g} s", late)
                    return
                if self.node[i] is None:
                    self.node[i] = node
                    first.set_result(None)
                await asyncio.sleep(self.interval)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.broken(i, time.monotonic(), type(exc).__name__, None)
        finally:
            if not first.done():
                first.set_result(None)
            if writer is not None:
                writer.close()

    def broken(self, i, at, reason, late):
        self.breaks.append({"conn": i, "port": self.port[i], "node": self.node[i], "at": at, "reason": reason,
                            "late_s": late})
        self.node[i] = None

    async def open(self):
        loop = asyncio.get_running_loop()
        firsts = []
        for i, task in enumerate(self.tasks):
            if task is None or task.done():
                first = loop.create_future()
                firsts.append(first)
                self.tasks[i] = asyncio.create_task(self.run(i, first))
        await asyncio.gather(*firsts)

    async def report(self):
        stalled, self.stalled = self.stalled, set()
        await asyncio.gather(*(self.tasks[i] for i in stalled))
        breaks, self.breaks = self.breaks, []
        alive = {i: n for i, n in enumerate(self.node) if n is not None}
        return {"alive": alive, "breaks": breaks}

    async def serve(self):
        loop = asyncio.get_running_loop()
        while True:
            command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if command == "open":
                await self.open()
            if command in ("open", "report"):
                print(json.dumps(await self.report()), flush=True)
            else:
                break
        for task in self.tasks:
            if task is not None:
                task.cancel()


if sys.argv[1] == "flows":
    uvloop.run(flows(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
else:
    uvloop.run(Keepalive(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])).serve())
"""

# Source ports of the flows probe: below the ephemeral range, so no other connection of the
# client takes them.
FLOW_FIRST_PORT = 20000
FLOWS = 300
PROBE_PORT = FLOW_FIRST_PORT + FLOWS
KEEPALIVE_CONNECTIONS = 200
KEEPALIVE_INTERVAL = 0.1
KEEPALIVE_LIMIT = 2.0
# Connections keep running this long after the leave or the join has settled.
AFTERMATH = 3.0
UP_TIMEOUT = 60.0


def median(values: list[float]) -> float:
    result = harness.median(list(values))
    assert result is not None
    return result


def probe_flows(
    sim: Sim, vip: str, first: int = FLOW_FIRST_PORT, count: int = FLOWS
) -> dict[str, str | None]:
    """Which node answers a connection from each of the source ports first.. (None: none)."""
    argv = [sys.executable, "-c", CLIENTS, "flows", vip, str(first), str(count)]
    answers: dict[str, str | None] = json.loads(sim.exec(CLIENT, argv, timeout=count * 3).stdout)
    return answers


# ---------------------------------------------------------------- the farm module


class Farm:
    """The farm module on node1..node3, driven with hakit's commands in the nodes."""

    def __init__(self, sim: Sim, workdir: Path, mode: str) -> None:
        self.sim = sim
        self.workdir = workdir
        self.mode = mode
        self.hakit = str(hakit_bin_dir() / "hakit")

    @property
    def vip(self) -> str:
        return self.sim.spare_addr(0, 1)

    def _archive(self) -> Path:
        groups = {"web": [(HTTP_PORT, "tcp", "on_port")], "dgram": [(UDP_PORT, "udp", "on_addr")]}
        files = {"start_both": START_BOTH, "stop_both": STOP_BOTH}
        return harness.farm_archive(self.workdir, MODULE, self.vip, MODES[self.mode], groups, files)

    def run(self, node: str, *args: str) -> str:
        return self.sim.exec(node, [self.hakit, *args], timeout=120).stdout

    def install(self) -> None:
        for node in FARM_NODES:
            d = self.sim.host_path(node, NGINX_DIR)
            d.mkdir(parents=True, exist_ok=True)
            (d / "nginx.conf").write_text(NGINX_CONF)
        self.run(FARM_NODES[0], "module", "install", "-m", MODULE, "-M", "5", str(self._archive()))
        self.run(FARM_NODES[0], "-H", ",".join(FARM_NODES), "-E", MODULE)

    def state(self, node: str) -> str:
        out = self.sim.exec(node, [self.hakit, "state", "-m", MODULE], check=False).stdout
        m = re.match(rf"{MODULE}: (\S+ \(\S+\))", out)
        return m.group(1) if m else "?"

    def start(self, *nodes: str) -> None:
        self.run(FARM_NODES[0], "-H", ",".join(nodes), "start", "-m", MODULE)
        harness.wait_until(
            lambda: all(self.state(n) == "UP (Ready)" for n in nodes),
            UP_TIMEOUT,
            lambda: "the farm UP on " + ", ".join(f"{n} (is {self.state(n)})" for n in nodes),
        )
        for node in nodes:
            harness.wait_listening(self.sim.addr(node), HTTP_PORT)

    def stop(self, *nodes: str) -> None:
        self.run(FARM_NODES[0], "-H", ",".join(nodes), "stop", "-m", MODULE)

    def owners(self, node: str) -> bytes:
        """Owner of each bucket of the group "web" in node's map (node indexes in name order)."""
        code = (
            "from hakit._farm_lb import Maps\n"
            f"owners, _ = Maps('/run/hakit/bpf/{MODULE}').buckets(0)\n"
            "print(owners.hex())\n"
        )
        return bytes.fromhex(self.sim.exec(node, [sys.executable, "-c", code]).stdout.strip())

    def settled_owners(self, members: tuple[str, ...]) -> bytes:
        """The bucket owners once the members' maps give every bucket to a member and every
        member some buckets, all alike, twice in a row."""
        indexes = {FARM_NODES.index(n) for n in members}
        seen: list[bytes | None] = [None]

        def settled() -> bool:
            maps = {self.owners(n) for n in members}
            owners = maps.pop() if len(maps) == 1 else None
            stable = owners is not None and owners == seen[0] and set(owners) == indexes
            seen[0] = owners
            return stable

        harness.wait_until(settled, UP_TIMEOUT, lambda: f"the bucket maps of {', '.join(members)} to settle")
        assert seen[0] is not None
        return seen[0]

    def filter_prog(self, node: str) -> int | None:
        """Id of the eBPF program on node's farm interface (tc ingress or XDP), None if none."""
        tc = self.sim.exec(node, ["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout
        link = self.sim.exec(node, ["ip", "-d", "link", "show", "eth0"]).stdout
        m = re.search(r" bpf .* id (\d+)", tc) or re.search(r"prog/xdp\w* id (\d+)", link)
        return int(m.group(1)) if m else None

    def wait_answered_by(self, node: str) -> float:
        """Seconds until a request from the client to the VIP is answered by node."""
        began = time.monotonic()
        harness.wait_until(
            lambda: set(probe_flows(self.sim, self.vip, PROBE_PORT, 1).values()) == {node},
            UP_TIMEOUT,
            lambda: f"{node} to answer on the VIP {self.vip}",
        )
        return time.monotonic() - began


# ---------------------------------------------------------------- new connections per second


@dataclass(frozen=True)
class WrkResult:
    conn_s: float
    errors: int  # socket errors and non-2xx answers


def wrk(sim: Sim, addr: str, seconds: int) -> WrkResult:
    argv = [
        "wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "-H", "Connection: close", f"http://{addr}/",
    ]  # fmt: skip
    out = sim.exec(CLIENT, argv, timeout=seconds + 60).stdout
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if rate is None:
        raise HakitError(f"wrk printed no rate: {out.strip()[-300:]}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(float(rate.group(1)), errors + (int(non2xx.group(1)) if non2xx else 0))


class Haproxy:
    """haproxy on PROXY, TCP mode, round robin over the farm nodes' own addresses."""

    def __init__(self, sim: Sim, workdir: Path) -> None:
        self.sim = sim
        self.workdir = workdir
        self.procs = harness.NodeProcesses(sim)

    @property
    def addr(self) -> str:
        return self.sim.addr(PROXY)

    def start(self) -> None:
        conf = self.workdir / "haproxy.cfg"
        servers = "".join(f"    server {n} {self.sim.addr(n)}:{HTTP_PORT}\n" for n in FARM_NODES)
        conf.write_text(
            "global\n"
            "    nbthread 1\n"
            "    maxconn 8000\n"
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 5s\n"
            "    timeout client 30s\n"
            "    timeout server 30s\n"
            "frontend hakit_bench\n"
            f"    bind {self.addr}:{HTTP_PORT}\n"
            "    default_backend hakit_farm\n"
            "backend hakit_farm\n"
            "    balance roundrobin\n"
            f"{servers}"
        )
        self.procs.start(PROXY, ["haproxy", "-db", "-f", str(conf)], log=self.workdir / "haproxy.log")
        harness.wait_listening(self.addr, HTTP_PORT)

    def stop(self) -> None:
        self.procs.stop()


def measure_connections(sim: Sim, farm: Farm, haproxy: Haproxy, rounds: int, seconds: int) -> dict[str, Any]:
    runs: dict[str, list[WrkResult]] = {"farm": [], "haproxy": []}
    for r in range(1, rounds + 1):
        for name, addr in (("farm", farm.vip), ("haproxy", haproxy.addr)):
            res = wrk(sim, addr, seconds)
            runs[name].append(res)
            print(f"conn/s  round {r}/{rounds}  {name:<8} {res.conn_s:>9,.0f}  ({res.errors} errors)",
                  flush=True)
    single = wrk(sim, sim.addr(FARM_NODES[0]), seconds)
    print(f"conn/s  one nginx straight ({FARM_NODES[0]}'s address) {single.conn_s:,.0f}", flush=True)
    fm = median([x.conn_s for x in runs["farm"]])
    hm = median([x.conn_s for x in runs["haproxy"]])
    print(f"conn/s  medians: farm {fm:,.0f}, haproxy {hm:,.0f}, ratio {fm / hm:.2f}", flush=True)
    return {
        "farm_conn_s": round(fm),
        "haproxy_conn_s": round(hm),
        "conn_ratio_vs_haproxy": round(fm / hm, 3),
        "single_nginx_conn_s": round(single.conn_s),
        "farm_conn_s_rounds": [round(x.conn_s) for x in runs["farm"]],
        "haproxy_conn_s_rounds": [round(x.conn_s) for x in runs["haproxy"]],
        "wrk_errors": {n: sum(x.errors for x in v) for n, v in runs.items()},
        "wrk_seconds": seconds,
        "wrk_connections": WRK_CONNECTIONS,
    }


# ---------------------------------------------------------------- leave and join


class KeepaliveClient:
    def __init__(self, sim: Sim, vip: str) -> None:
        argv = [sys.executable, "-c", CLIENTS, "keepalive", vip, str(KEEPALIVE_CONNECTIONS),
                str(KEEPALIVE_INTERVAL), str(KEEPALIVE_LIMIT)]  # fmt: skip
        self.proc = sim.popen(CLIENT, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, command: str) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(command + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise HakitError(f"the keep-alive client on {CLIENT} ended (exit {self.proc.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            try:
                stdin.write("stop\n")
                stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def spread(nodes: Iterable[str | None]) -> str:
    counts = {n: 0 for n in FARM_NODES}
    for n in nodes:
        key = n if n in counts else "none"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {c}" for n, c in counts.items())


def describe_break(b: dict[str, Any], began: float, what: str) -> str:
    late = b["late_s"]
    after = (f"; its reply came {late:.2f} s after the request" if late is not None
             else "; no reply came" if b["reason"].startswith("no reply") else "")
    return (f"  broken: connection {b['conn']} (port {b['port']}) on {b['node']}: {b['reason']}, "
            f"{b['at'] - began:+.2f} s after the {what} began{after}")


def measure_leave_join(sim: Sim, farm: Farm) -> dict[str, Any]:
    survivors = tuple(n for n in FARM_NODES if n != LEAVER)
    client = KeepaliveClient(sim, farm.vip)
    try:
        before = client.ask("open")
        alive = before["alive"]
        print(f"keep-alive: {len(alive)} connections ({spread(alive.values())}), "
              f"{len(before['breaks'])} failed to open", flush=True)
        owners_before = farm.settled_owners(FARM_NODES)
        flows_before = probe_flows(sim, farm.vip)

        leave_began = time.monotonic()
        farm.stop(LEAVER)
        owners_after = farm.settled_owners(survivors)
        time.sleep(AFTERMATH)
        flows_after = probe_flows(sim, farm.vip)
        leave = client.ask("report")
        counted_leave = {c for c, n in alive.items() if n in survivors}
        broken_leave = [b for b in leave["breaks"] if str(b["conn"]) in counted_leave]
        ended_on_leaver = [b for b in leave["breaks"] if b["node"] == LEAVER]

        reopened = client.ask("open")
        alive = reopened["alive"]
        join_began = time.monotonic()
        farm.start(LEAVER)
        owners_join = farm.settled_owners(FARM_NODES)
        time.sleep(AFTERMATH)
        join = client.ask("report")
        broken_join = [b for b in join["breaks"] if str(b["conn"]) in alive]
    finally:
        client.close()

    moved = sum(a != b for a, b in zip(owners_before, owners_after, strict=True)) / len(owners_before)
    moved_join = sum(a != b for a, b in zip(owners_after, owners_join, strict=True)) / len(owners_before)
    ports = sorted(flows_before)
    answered = [p for p in ports if flows_before[p] and flows_after[p]]
    moved_flows = sum(flows_before[p] != flows_after[p] for p in answered)
    share_leaver = owners_before.count(FARM_NODES.index(LEAVER)) / len(owners_before)
    print(f"buckets: {LEAVER} owned {share_leaver:.3f}; its leave moved {moved:.3f} of them, "
          f"its join {moved_join:.3f}", flush=True)
    print(f"flows:   before {spread(flows_before.values())}; after the leave {spread(flows_after.values())}; "
          f"moved {moved_flows}/{len(answered)}", flush=True)
    print(f"leave:   {len(broken_leave)} of {len(counted_leave)} connections on {'/'.join(survivors)} "
          f"broken; {len(ended_on_leaver)} ended with {LEAVER}'s nginx", flush=True)
    for b in broken_leave:
        print(describe_break(b, leave_began, "leave"), flush=True)
    print(f"join:    {len(broken_join)} of {len(alive)} connections broken "
          f"({len(reopened['breaks'])} failed to reopen)", flush=True)
    for b in broken_join:
        print(describe_break(b, join_began, "join"), flush=True)
    return {
        "moved_share": round(moved, 4),
        "moved_share_join": round(moved_join, 4),
        "leaver_bucket_share": round(share_leaver, 4),
        "moved_share_flows": round(moved_flows / len(answered), 4) if answered else None,
        "flows_answered": len(answered),
        "broken": len(broken_leave) + len(broken_join),
        "broken_leave": len(broken_leave),
        "counted_leave": len(counted_leave),
        "broken_join": len(broken_join),
        "counted_join": len(alive),
        "broken_late_replies": sum(b["late_s"] is not None for b in broken_leave + broken_join),
    }


# ---------------------------------------------------------------- per-packet cost


def ip_in_receives(sim: Sim, node: str) -> int:
    """Packets that entered node's IP layer: the filter let them through."""
    lines = [line.split() for line in sim.exec(node, ["cat", "/proc/net/snmp"]).stdout.splitlines()]
    names, values = (line for line in lines if line[0] == "Ip:")
    return int(values[names.index("InReceives")])


def build_udp_tool(workdir: Path) -> Path:
    src, exe = workdir / "hkbench_udp.c", workdir / "hkbench_udp"
    src.write_text(UDP_TOOL)
    res = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(src)], capture_output=True, text=True)
    if res.returncode != 0:
        raise HakitError(f"cannot build the UDP sender: {res.stderr.strip()[-500:]}")
    return exe


# The sender, and so the softirqs carrying its datagrams over the bridge into the receiving
# node (the filter included: veth hands packets over on the sending CPU), on one vCPU; the
# application reading them on the other.  The first saturates: the rate is what one vCPU
# sends, bridges and receives, and the filter's cost shows in it.
SENDER_CPU, SINK_CPU = 0, 1


@dataclass(frozen=True)
class PpsResult:
    accepted: float  # per second, into the receiver's IP layer
    sent: float
    read: float  # by the sink


def udp_round(sim: Sim, tool: Path, receiver: str, addr: str, seconds: float) -> PpsResult:
    sink = sim.popen(receiver, ["taskset", "-c", str(SINK_CPU), str(tool), "sink", str(UDP_PORT)],
                     stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != "ready":
            raise HakitError(f"the UDP sink on {receiver} did not start (exit {sink.wait()})")
        before = ip_in_receives(sim, receiver)
        argv = ["taskset", "-c", str(SENDER_CPU), str(tool), "send", addr, str(UDP_PORT), str(seconds)]
        out = sim.exec(CLIENT, argv, timeout=seconds + 30).stdout.split()
        accepted = ip_in_receives(sim, receiver) - before
        sink.terminate()
        read = int(sink.communicate(timeout=10)[0].strip() or 0)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    sent, elapsed = int(out[0]), float(out[1])
    return PpsResult(accepted / elapsed, sent / elapsed, read / elapsed)


def program_ns_per_packet(sim: Sim, farm: Farm, tool: Path, node: str, seconds: float) -> float | None:
    """The filter's own run time per packet, from the kernel's BPF statistics (switched on
    for this run only: they cost a clock read per run)."""
    prog = farm.filter_prog(node)
    if prog is None:
        return None
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    previous = stats.read_text().strip()

    def counters() -> tuple[int, int]:
        info = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog)],
                                         capture_output=True, text=True, check=True).stdout)
        return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))

    stats.write_text("1")
    try:
        ns0, n0 = counters()
        udp_round(sim, tool, node, farm.vip, seconds)
        ns1, n1 = counters()
    finally:
        stats.write_text(previous)
    return (ns1 - ns0) / (n1 - n0) if n1 > n0 else None


def measure_pps(sim: Sim, farm: Farm, tool: Path, rounds: int, seconds: float) -> dict[str, Any]:
    """node1 alone in the farm owns every bucket: with the program, every datagram to the VIP
    is accepted; without (module stopped on node1), the same datagrams go to node1's own
    address."""
    node = FARM_NODES[0]
    farm.stop(*FARM_NODES[1:])
    farm.settled_owners((node,))
    runs: dict[str, list[PpsResult]] = {"with": [], "without": []}
    vip_waits: list[float] = []
    for r in range(1, rounds + 1):
        for side in ("with", "without"):
            if side == "with":
                if r > 1:
                    farm.start(node)
                    farm.settled_owners((node,))
                vip_waits.append(farm.wait_answered_by(node))
            else:
                farm.stop(node)
            attached = farm.filter_prog(node) is not None
            if attached != (side == "with"):
                raise HakitError(f"{node}: an eBPF program is {'' if attached else 'not '}attached "
                                 f"with the module {'started' if side == 'with' else 'stopped'}")
            res = udp_round(sim, tool, node, farm.vip if side == "with" else sim.addr(node), seconds)
            runs[side].append(res)
            print(f"udp     round {r}/{rounds}  {side:<7}  accepted {res.accepted:>9,.0f}/s  "
                  f"(sent {res.sent:>9,.0f}/s, read {res.read:>9,.0f}/s)", flush=True)
    farm.start(node)
    farm.wait_answered_by(node)
    prog_ns = program_ns_per_packet(sim, farm, tool, node, seconds)
    w = median([x.accepted for x in runs["with"]])
    wo = median([x.accepted for x in runs["without"]])
    shown = f"{prog_ns:,.0f} ns" if prog_ns is not None else "unknown"
    print(f"udp     medians: with {w:,.0f}, without {wo:,.0f}, ratio {w / wo:.3f}; the program's own run "
          f"time {shown} a packet, of {1e9 / wo:,.0f} ns a packet on the saturated vCPU without it",
          flush=True)
    late = [round(t, 2) for t in vip_waits if t > 1.0]
    if late:
        print(f"udp     the VIP answered {CLIENT} only after {', '.join(map(str, late))} s in some rounds "
              f"(its ARP entry named a node that had left)", flush=True)
    return {
        "pps_with": round(w),
        "pps_without": round(wo),
        "pps_ratio": round(w / wo, 4),
        "filter_ns_per_packet": round(prog_ns) if prog_ns is not None else None,
        "pps_with_rounds": [round(x.accepted) for x in runs["with"]],
        "pps_without_rounds": [round(x.accepted) for x in runs["without"]],
        "pps_seconds": seconds,
        "vip_wait_s": [round(t, 2) for t in vip_waits],
    }


# ---------------------------------------------------------------- the whole run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=tuple(MODES), default="directed",
                   help="how the VIP's frames reach the nodes: directed (vmac_directed, default) "
                        "or flood (vmac_invisible)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of each side-by-side figure (default 5)")
    p.add_argument("--seconds", type=int, default=5, help="length of each wrk run (default 5)")
    p.add_argument("--pps-seconds", type=float, default=3.0, help="length of each UDP run (default 3)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1 or args.pps_seconds <= 0:
        p.error("--rounds, --seconds and --pps-seconds must be positive")
    return args


def bench(args: argparse.Namespace) -> dict[str, Any]:
    harness.require(commands=("nginx", "wrk", "haproxy", "gcc", "tc", "taskset", "bpftool"))
    if (os.cpu_count() or 1) <= SINK_CPU:
        raise HakitError("the bench needs 2 CPUs: the UDP sender on one, the sink on the other")
    print(f"mode: {args.mode} ({MODES[args.mode]})", flush=True)
    with tempfile.TemporaryDirectory(prefix="hakit-bench-") as tmp, harness.simulated_cluster(5) as sim:
        workdir = Path(tmp)
        tool = build_udp_tool(workdir)
        farm = Farm(sim, workdir, args.mode)
        haproxy = Haproxy(sim, workdir)
        try:
            # wrk closes first on haproxy's connections (haproxy passes nginx's FIN on after
            # the data): without this, TIME_WAIT exhausts the client's ports after one round.
            # The same on haproxy's node, which connects to nginx.
            for node in (CLIENT, PROXY):
                sim.exec(node, ["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"])
            farm.install()
            farm.start(*FARM_NODES)
            farm.settled_owners(FARM_NODES)
            haproxy.start()
            result = {"mode": args.mode} | measure_connections(sim, farm, haproxy, args.rounds, args.seconds)
            haproxy.stop()
            result |= measure_leave_join(sim, farm)
            result |= measure_pps(sim, farm, tool, args.rounds, args.pps_seconds)
        finally:
            haproxy.stop()
    result["targets_met"] = {
        "conn_ratio_vs_haproxy": result["conn_ratio_vs_haproxy"] >= TARGET_CONN_RATIO,
        "pps_ratio": result["pps_ratio"] >= TARGET_PPS_RATIO,
        "moved_share": result["moved_share"] <= TARGET_MOVED,
        "broken": result["broken"] == 0,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = harness.guarded(lambda: bench(args))
    met = result["targets_met"]
    print("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
