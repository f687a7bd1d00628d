"""The API's endpoints (docs/web.md): reading the cluster, acting on modules, configuring.

Actions run the `hakit` command itself on the node concerned, for the web user: the CLI's
checks, messages and exit codes apply, and the node's commands log records the user's name."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hakit.config.loader import check_files
from hakit.errors import HakitError
from hakit.node.web import templates
from hakit.node.web.peers import NodeDown, UnknownNode
from hakit.node.web.routes import Api, ApiError, Field
from hakit.node.web.users import ROLES, Users, check_role

if TYPE_CHECKING:
    from hakit.node.web.auth import Identity
    from hakit.node.web.server import WebService

api = Api()
V1 = "/api/v1"
MODULE = f"{V1}/modules/{{module}}"
ON_NODE = f"{MODULE}/nodes/{{node}}"
SSE_POLL_S = 1.0
SSE_KEEPALIVE_S = 15.0

# action -> (the CLI's argv before -m, what "value" may be)
ACTIONS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    **{verb: ([verb], ()) for verb in ("start", "stop", "restart", "stopstart", "prim", "primforce",
                                        "second", "swap")},
    "checker": (["checker"], ("on", "off")),
    "errd": (["errd"], ("on", "off")),
    "vip": (["vip"], ("open", "close")),
}


@dataclass
class Call:
    service: WebService
    request: web.Request
    identity: Identity | None
    body: dict[str, Any]
    query: dict[str, Any]

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    @property
    def user(self) -> str:
        assert self.identity is not None  # (endpoints with a role only)
        return self.identity.user


def _node_error(exc: HakitError, otherwise: int) -> ApiError:
    """A node that did not answer is the gateway's failure (502); one that is not in the cluster,
    or a module it does not have, is not found (404)."""
    if isinstance(exc, NodeDown):
        return ApiError(502, str(exc))
    return ApiError(404 if isinstance(exc, UnknownNode) else otherwise, str(exc))


async def _read(call: Call, node: str, what: str, **args: Any) -> Any:
    try:
        return await call.service.peers.read(node, what, **args)
    except HakitError as exc:
        raise _node_error(exc, 404) from None


# ---------------------------------------------------------------- session


@api.add("POST", f"{V1}/login", None, "Log in; sets the session cookie and returns the CSRF token",
         body={"user": Field(str, "user name", required=True, max_len=64),
               "password": Field(str, "password", required=True, max_len=1024)}, csrf=False)
async def login(call: Call) -> web.Response:
    return await call.service.login(call)


@api.add("POST", f"{V1}/logout", "monitor", "End this session")
async def logout(call: Call) -> web.Response:
    return call.service.logout(call)


@api.add("GET", f"{V1}/session", "monitor", "Who is logged in, with which role, and the CSRF token")
async def session(call: Call) -> dict[str, Any]:
    ident = call.identity
    assert ident is not None
    return {"user": ident.user, "role": ident.role, "via": ident.via, "csrf": ident.csrf,
            "node": call.service.peers.me(), "roles": list(ROLES)}


@api.add("POST", f"{V1}/tokens", "monitor", "A new token for scripts, for the calling user (shown once)",
         body={"name": Field(str, "a name for the token", required=True, max_len=64),
               "days": Field(int, "lifetime in days (none: until deleted)")})
async def new_token(call: Call) -> dict[str, Any]:
    days = call.body.get("days")
    token = await call.service.change_users(
        call, lambda u: u.new_token(call.user, call.body["name"], days * 86400.0 if days else None))
    return {"name": call.body["name"], "token": token}


@api.add("DELETE", f"{V1}/tokens/{{name}}", "monitor", "Delete one of the calling user's tokens")
async def drop_token(call: Call) -> dict[str, Any]:
    await call.service.change_users(call, lambda u: u.drop_token(call.user, call.param("name")))
    return {"deleted": call.param("name")}


# ---------------------------------------------------------------- reading


@api.add("GET", f"{V1}/cluster", "monitor", "Nodes, modules and the state of each module on each node")
async def cluster(call: Call) -> dict[str, Any]:
    return await call.service.peers.overview()


@api.add("GET", f"{V1}/cluster/events", "monitor",
         "Server-sent events: 'overview' (as GET /cluster) at once and at each change",
         answers="text/event-stream")
async def cluster_events(call: Call) -> web.StreamResponse:
    async def overviews() -> AsyncIterator[tuple[str, Any]]:
        last = None
        while True:
            now = await call.service.peers.overview()
            if now != last:
                yield "overview", now
                last = now
            else:
                yield "", None
            await asyncio.sleep(SSE_POLL_S)
    return await sse(call.request, overviews())


@api.add("GET", MODULE, "monitor", "One module: its nodes and its state on each")
async def module(call: Call) -> dict[str, Any]:
    found = [m for m in (await call.service.peers.overview())["modules"] if m["name"] == call.param("module")]
    if not found:
        raise ApiError(404, f"no module {call.param('module')!r} on any node that answered")
    return dict(found[0])


@api.add("GET", f"{ON_NODE}/resources", "monitor", "A module's resources on a node")
async def resources(call: Call) -> Any:
    return await _read(call, call.param("node"), "resources", module=call.param("module"))


@api.add("GET", f"{ON_NODE}/history", "monitor", "The values a resource took, oldest first",
         query={"resource": Field(str, "resource name, e.g. module.state", required=True),
                "limit": Field(int, "at most this many, the newest (default 100)")})
async def history(call: Call) -> Any:
    return await _read(call, call.param("node"), "history", module=call.param("module"),
                       resource=call.query["resource"], limit=call.query.get("limit", 100))


LOG_QUERY = {"level": Field(str, "main (U E C S), info (and I), all (and D)", enum=("main", "info", "all")),
             "limit": Field(int, "at most this many lines, the newest (default 200)"),
             "after": Field(int, "only lines after the one with this id")}


@api.add("GET", f"{ON_NODE}/log", "monitor", "A module's log on a node, oldest first", query=LOG_QUERY)
async def log(call: Call) -> Any:
    return await _read(call, call.param("node"), "log", module=call.param("module"), **call.query)


@api.add("GET", f"{ON_NODE}/log/follow", "monitor",
         "Server-sent events: the newest lines, then one 'log' event per new line",
         query={"level": LOG_QUERY["level"], "limit": LOG_QUERY["limit"]}, answers="text/event-stream")
async def log_follow(call: Call) -> web.StreamResponse:
    node, module_name = call.param("node"), call.param("module")
    level = call.query.get("level", "main")
    await _read(call, node, "log", module=module_name, level=level, limit=1)  # 404 now, not in the stream

    async def lines() -> AsyncIterator[tuple[str, Any]]:
        after, limit = 0, call.query.get("limit", 50)
        while True:
            try:
                got = await call.service.peers.read(node, "log", module=module_name, level=level,
                                                    limit=limit, after=after)
            except HakitError as exc:
                yield "unreachable", {"error": str(exc)}
                got = []
            for line in got:
                yield "log", line
                after = line["id"]
            if not got:
                yield "", None
            limit = 500
            await asyncio.sleep(SSE_POLL_S)
    return await sse(call.request, lines())


@api.add("GET", f"{ON_NODE}/sync", "monitor", "A mirror's synchronisation: done, total, rate, ETA")
async def sync(call: Call) -> Any:
    return await _read(call, call.param("node"), "sync", module=call.param("module"))


@api.add("GET", f"{ON_NODE}/rfsdiff", "monitor",
         "A mirror primary's estimate of what a synchronisation would send now (hakit rfsdiff)")
async def rfsdiff(call: Call) -> dict[str, Any]:
    result = await _hakit(call, call.param("node"), ["rfsdiff", "-m", call.param("module")])
    return {"output": result["stdout"]}


@api.add("GET", f"{MODULE}/config", "monitor", "A module's userconfig.xml and nodes, as this node has them")
async def module_config(call: Call) -> Any:
    return await _read(call, call.service.peers.me(), "config", module=call.param("module"))


@api.add("GET", f"{V1}/commands", "monitor", "A node's commands log, oldest first",
         query={"node": Field(str, "node (default: the one answering)"),
                "limit": Field(int, "at most this many, the newest (default 200)")})
async def commands(call: Call) -> Any:
    return await _read(call, call.query.get("node") or call.service.peers.me(), "commands",
                       limit=call.query.get("limit", 200))


@api.add("GET", f"{V1}/templates", "monitor", "Module templates and their macros, for the wizard")
async def template_list(call: Call) -> Any:
    return await asyncio.to_thread(templates.listing)


# ---------------------------------------------------------------- acting


async def _hakit(call: Call, node: str, argv: list[str]) -> dict[str, Any]:
    """`hakit ARGV` on the node for the web user: its answer, or its refusal as a 409 with the
    command's own message."""
    try:
        result = await call.service.peers.run(node, argv, call.user)
    except HakitError as exc:
        raise _node_error(exc, 409) from None
    if result.get("code") != 0:
        message = (result.get("stderr") or result.get("stdout") or "").strip()
        raise ApiError(409, message.removeprefix("hakit: ") or f"exit code {result.get('code')}",
                       code=result.get("code"))
    return result


def _output(result: dict[str, Any]) -> str:
    return (result["stdout"] + result["stderr"]).strip()


@api.add("POST", f"{ON_NODE}/action", "control", "A module command on a node, as `hakit VERB -m AM` there",
         body={"action": Field(str, "the command", required=True, enum=tuple(ACTIONS)),
               "value": Field(str, "checker, errd: on|off; vip: open|close"),
               "fullsync": Field(bool, "second: synchronise fully")})
async def action(call: Call) -> dict[str, Any]:
    verb, values = ACTIONS[call.body["action"]]
    argv = list(verb)
    value = call.body.get("value")
    if values:
        if value not in values:
            raise ApiError(400, f"action {verb[0]} needs 'value': {' or '.join(values)}")
        argv.append(value)
    elif value is not None:
        raise ApiError(400, f"action {verb[0]} takes no 'value'")
    if call.body.get("fullsync"):
        if verb != ["second"]:
            raise ApiError(400, "'fullsync' goes with the action second only")
        argv.append("fullsync")
    node = call.param("node")
    result = await _hakit(call, node, [*argv, "-m", call.param("module")])
    return {"node": node, "code": 0, "output": _output(result)}


# ---------------------------------------------------------------- configuring


def _check_text(kind: str, text: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="hakit-check-") as tmp:
        path = Path(tmp) / ("cluster.xml" if kind == "cluster" else "userconfig.xml")
        path.write_text(text)
        return [{"line": p.line, "message": p.message, "warning": p.warning}
                for p in check_files([path])]


@api.add("POST", f"{V1}/config/check", "admin",
         "Check a userconfig.xml or a cluster.xml: problems at their line",
         body={"userconfig": Field(str, "a module's userconfig.xml"), "cluster": Field(str, "a cluster.xml")})
async def config_check(call: Call) -> dict[str, Any]:
    if len(call.body) != 1:
        raise ApiError(400, "give one of 'userconfig' or 'cluster'")
    (kind, text), = call.body.items()
    problems = await asyncio.to_thread(_check_text, kind, text)
    return {"ok": not any(not p["warning"] for p in problems), "problems": problems}


@api.add("POST", f"{V1}/modules", "admin",
         "Install a module on the answering node, from a template with its macros or from a .safe",
         body={"name": Field(str, "module name", required=True, max_len=64),
               "template": Field(str, "template name (GET /templates)"),
               "macros": Field(dict, "template macros: name -> value"),
               "safe": Field(str, "a .safe archive, base64", max_len=64 << 20),
               "id": Field(int, "module id (default: the first free)")})
async def install(call: Call) -> web.Response:
    body = call.body
    if ("template" in body) == ("safe" in body):
        raise ApiError(400, "give one of 'template' or 'safe'")
    if "macros" in body and "template" not in body:
        raise ApiError(400, "'macros' go with 'template'")
    with tempfile.TemporaryDirectory(prefix="hakit-install-") as tmp:
        archive = Path(tmp) / f"{body['name']}.safe"
        if "template" in body:
            try:
                await asyncio.to_thread(templates.filled, body["template"], body.get("macros", {}), archive)
            except HakitError as exc:
                raise ApiError(400, str(exc)) from None
        else:
            try:
                archive.write_bytes(base64.b64decode(body["safe"], validate=True))
            except ValueError:  # (binascii.Error, or characters that are not ASCII at all)
                raise ApiError(400, "'safe' is not base64") from None
        argv = ["module", "install", "-m", body["name"], *(["-M", str(body["id"])] if "id" in body else []),
                str(archive)]
        await _hakit(call, call.service.peers.me(), argv)
    return web.json_response({"name": body["name"]}, status=201)


@api.add("PUT", f"{MODULE}/config", "admin",
         "Replace a module's userconfig.xml on the answering node (checked first; apply it with /apply)",
         body={"userconfig": Field(str, "the new userconfig.xml", required=True)})
async def put_config(call: Call) -> dict[str, Any]:
    text = call.body["userconfig"]
    problems = await asyncio.to_thread(_check_text, "userconfig", text)
    if any(not p["warning"] for p in problems):
        raise ApiError(400, "the configuration has problems", problems=problems)
    try:
        await asyncio.to_thread(call.service.replace_userconfig, call.param("module"), text, call.user)
    except HakitError as exc:
        raise ApiError(404, str(exc)) from None
    return {"ok": True, "problems": problems}


NODES = {"nodes": Field(list, "node names", required=True, items=str)}


@api.add("POST", f"{MODULE}/apply", "admin",
         "Apply the module's configuration of the answering node to nodes (hakit -H NODES -E AM)", body=NODES)
async def apply_module(call: Call) -> dict[str, Any]:
    result = await _hakit(call, call.service.peers.me(),
                          ["-H", ",".join(call.body["nodes"]), "-E", call.param("module")])
    return {"output": _output(result)}


@api.add("POST", f"{V1}/config/cluster/apply", "admin",
         "Apply the answering node's cluster.xml to nodes (hakit -H NODES -G)", body=NODES)
async def apply_cluster(call: Call) -> dict[str, Any]:
    result = await _hakit(call, call.service.peers.me(), ["-H", ",".join(call.body["nodes"]), "-G"])
    return {"output": _output(result)}


@api.add("DELETE", MODULE, "admin", "Uninstall a module from the answering node (a backup .safe is kept)")
async def uninstall(call: Call) -> dict[str, Any]:
    argv = ["module", "uninstall", "-m", call.param("module")]
    result = await _hakit(call, call.service.peers.me(), argv)
    return {"output": _output(result)}


# ---------------------------------------------------------------- users


@api.add("GET", f"{V1}/users", "admin", "Local users, their roles and tokens (never hashes)")
async def users(call: Call) -> Any:
    return call.service.users().listing()


USER_BODY = {"role": Field(str, "role", enum=ROLES), "password": Field(str, "password", max_len=1024)}


@api.add("POST", f"{V1}/users", "admin", "Add a local user (on every node that answers)",
         body={"name": Field(str, "user name", required=True, max_len=64), **USER_BODY})
async def add_user(call: Call) -> web.Response:
    body = call.body
    if "role" not in body or "password" not in body:
        raise ApiError(400, "a new user needs 'role' and 'password'")
    await call.service.change_users(call, lambda u: u.add(body["name"], body["role"], body["password"]))
    return web.json_response({"name": body["name"], "role": body["role"]}, status=201)


@api.add("PUT", f"{V1}/users/{{name}}", "admin", "Change a user's role or password", body=USER_BODY)
async def change_user(call: Call) -> dict[str, Any]:
    name = call.param("name")

    def change(u: Users) -> None:
        u.get(name)
        if "role" in call.body:
            u.set_role(name, check_role(call.body["role"]))
        if "password" in call.body:
            u.set_password(name, call.body["password"])
    await call.service.change_users(call, change)
    call.service.auth.end_sessions_of(name)
    return {"name": name}


@api.add("DELETE", f"{V1}/users/{{name}}", "admin", "Delete a local user")
async def delete_user(call: Call) -> dict[str, Any]:
    name = call.param("name")
    if name == call.user:
        raise ApiError(409, "you cannot delete yourself")
    await call.service.change_users(call, lambda u: u.delete(name))
    call.service.auth.end_sessions_of(name)
    return {"deleted": name}


# ---------------------------------------------------------------- helpers


async def sse(request: web.Request, events: AsyncIterator[tuple[str, Any]]) -> web.StreamResponse:
    """Send events until the client leaves.  The generators tick every SSE_POLL_S with an empty
    kind when there is nothing new: a comment line then, now and then, keeps idle proxies from
    closing the stream, and a client gone is noticed at the next write."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    wrote = loop.time()
    try:
        async for kind, data in events:
            if kind:
                await resp.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
                wrote = loop.time()
            elif loop.time() - wrote > SSE_KEEPALIVE_S:
                await resp.write(b": keepalive\n\n")
                wrote = loop.time()
    except ConnectionResetError:
        pass
    return resp

