"""The web service's view of the cluster: each node answers for itself, this one directly,
the others over RPC on a connection kept per node (one TLS handshake, not one per request).
A node that does not answer is reported as such, with why, never as an error of the whole."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hakit.config.cluster_model import Cluster
from hakit.config.loader import load_cluster
from hakit.errors import HakitError
from hakit.node import pki, remote_ops
from hakit.node.web import reads
from hakit.paths import Paths
from hakit.runtime import rpc_client

READ_TIMEOUT_S = 3.0  # an overview must not wait on a node that is gone
# A node that did not answer is taken as down this long: every console polling the overview
# would otherwise wait READ_TIMEOUT_S on it, one after the other.
DOWN_MEMORY_S = 5.0
ACTION_TIMEOUT_S = remote_ops.CLI_TIMEOUT


class NodeDown(HakitError):
    """The node did not answer (down, cut off, or its hakitd stopped)."""


class UnknownNode(HakitError):
    """No node of that name in cluster.xml."""


class Peers:
    def __init__(self, p: Paths) -> None:
        self.paths = p
        self._conns: dict[str, rpc_client.Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._down: dict[str, tuple[float, str]] = {}  # node -> (when it failed, why)

    def cluster(self) -> Cluster:
        return load_cluster(self.paths.cluster_xml)

    def me(self) -> str:
        return reads.node_name(self.paths)

    async def _call(self, node: str, op: str, args: dict[str, Any], timeout: float,
                    user: str | None = None) -> Any:
        loop = asyncio.get_running_loop()
        if (down := self._down.get(node)) and loop.time() - down[0] < DOWN_MEMORY_S:
            raise NodeDown(down[1])
        try:
            result = await self._call_once(node, op, args, timeout, user)
        except NodeDown as exc:
            self._down[node] = (loop.time(), str(exc))
            raise
        self._down.pop(node, None)
        return result

    async def _call_once(self, node: str, op: str, args: dict[str, Any], timeout: float,
                         user: str | None) -> Any:
        lock = self._locks.setdefault(node, asyncio.Lock())
        async with lock:
            for attempt in (1, 2):
                conn = self._conns.get(node)
                if conn is None:
                    cluster = self.cluster()
                    if node not in cluster.node_names:
                        raise UnknownNode(f"no node {node!r} in cluster.xml")
                    try:
                        conn = await asyncio.wait_for(
                            rpc_client.connect(self.paths, pki.node_addresses(cluster, node), node=node),
                            READ_TIMEOUT_S)
                    except TimeoutError:
                        raise NodeDown(f"{node}: no answer within {READ_TIMEOUT_S:g} s") from None
                    except rpc_client.RpcError as exc:
                        raise NodeDown(f"{node}: {exc}") from None
                    self._conns[node] = conn
                try:
                    return await conn.call(op, args, timeout, user)
                except rpc_client.RpcError as exc:
                    # A kept connection may have died with its peer's restart: one new try.
                    self._drop(node)
                    if attempt == 2 or "did not answer" in str(exc):
                        raise NodeDown(f"{node}: {exc}") from None
        raise AssertionError("unreachable")

    def _drop(self, node: str) -> None:
        conn = self._conns.pop(node, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        for node in list(self._conns):
            self._drop(node)

    async def read(self, node: str, what: str, **args: Any) -> Any:
        if node == self.me():
            return await asyncio.to_thread(reads.read, self.paths, {"what": what, **args})
        return await self._call(node, "web_read", {"what": what, **args}, READ_TIMEOUT_S)

    async def run(self, node: str, argv: list[str], user: str) -> dict[str, Any]:
        """`hakit ARGV` on the node, for the web user: {code, stdout, stderr}."""
        if node == self.me():
            return await remote_ops.run_hakit(argv, user, "api")
        return dict(await self._call(node, "cli", {"argv": argv, "origin": "api"}, ACTION_TIMEOUT_S, user))

    async def overview(self) -> dict[str, Any]:
        """Every node's modules and states, merged into one view (GET /api/v1/cluster)."""
        problem: str | None = None
        try:
            names = self.cluster().node_names
        except HakitError as exc:
            names, problem = [self.me()], str(exc).splitlines()[0]

        async def one(node: str) -> tuple[str, Any]:
            try:
                return node, await self.read(node, "summary")
            except HakitError as exc:
                return node, exc

        answers = dict(await asyncio.gather(*(one(n) for n in names)))
        nodes: list[dict[str, Any]] = []
        modules: dict[str, dict[str, Any]] = {}
        for node in names:
            got = answers[node]
            if isinstance(got, Exception):
                nodes.append({"name": node, "up": False, "version": None, "error": str(got)})
                continue
            nodes.append({"name": node, "up": True, "version": got["version"], "error": None})
            for name, m in got["modules"].items():
                entry = modules.setdefault(name, {"name": name, "mode": m["mode"], "id": m["id"],
                                                  "nodes": m["nodes"], "states": {}})
                entry["states"][node] = {k: m[k] for k in ("state", "status", "since", "error")}
        up = {n["name"] for n in nodes if n["up"]}
        for entry in modules.values():
            for node in entry["nodes"]:
                # None: the node did not answer; a node that answered without the module says so.
                entry["states"].setdefault(node, {"state": None, "status": None, "since": None,
                                                  "error": "not installed"} if node in up else None)
        return {"node": self.me(), "problem": problem, "nodes": nodes,
                "modules": sorted(modules.values(), key=lambda m: m["name"])}
