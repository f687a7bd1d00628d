"""The web listener of hakitd: HTTPS on <web port> (9453) of every address of the node, the
console's files at /, the API under /api/v1 (endpoints.py), and the checks every request goes
through: who asks (session cookie or bearer token), whether their role allows the endpoint,
the CSRF token of a session's changes, and the shape of what they send."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from hakit.config.cluster_model import Web
from hakit.config.loader import load_cluster
from hakit.errors import HakitError, UsageError
from hakit.files import write_atomic
from hakit.module.catalog import Catalog
from hakit.node.web import auth, endpoints, metrics
from hakit.node.web.peers import Peers
from hakit.node.web.routes import ApiError, Endpoint
from hakit.node.web.users import UserExists, Users, role_rank
from hakit.paths import Paths
from hakit.runtime import credentials
from hakit.store.node_store import NodeStore

CONSOLE = Path(__file__).parent / "console"
MAX_BODY = 96 << 20  # a .safe upload, base64
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
NOT_BUILT = (b"<!doctype html><title>hakit</title><p>The console was not built into this installation; "
             b"the API answers under /api/v1 (docs/web.md).")


def _log(message: str) -> None:
    print(f"hakitd: web: {message}", file=sys.stderr, flush=True)


class WebService:
    def __init__(self, p: Paths, log: Callable[[str], None] = _log) -> None:
        self.paths = p
        self.log = log
        self.peers = Peers(p)
        self.conf = Web()
        self._users: tuple[float, Users] | None = None
        self.auth = auth.Authenticator(self.users, self.conf.session, None)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._listening: tuple[Any, ...] | None = None

    # ------------------------------------------------------------ users
    def users(self) -> Users:
        """The users file, read again only when it changed."""
        try:
            mtime = self.paths.web_users.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if self._users is None or self._users[0] != mtime:
            self._users = (mtime, Users(self.paths.web_users))
        return self._users[1]

    async def change_users(self, call: endpoints.Call, change: Callable[[Users], Any]) -> Any:
        """Apply a change to the users, save it, and ship the file to the other nodes."""
        users = Users(self.paths.web_users)
        try:
            result = change(users)
        except UsageError as exc:
            raise ApiError(400, str(exc)) from None
        except UserExists as exc:
            raise ApiError(409, str(exc)) from None
        except HakitError as exc:  # no such user or token
            raise ApiError(404, str(exc)) from None
        users.save()
        self._users = None
        self.record(call.user, f"web: {call.request.method} {call.request.path}", 0)
        await ship_users(self.peers, users.dump(), self.log)
        return result

    def record(self, user: str, command: str, code: int) -> None:
        store = NodeStore(self.paths.node_db)
        try:
            store.command_ended(store.command_started(user, "api", command), code)
        finally:
            store.close()

    def replace_userconfig(self, module: str, text: str, user: str) -> None:
        Catalog(self.paths).require(module)
        write_atomic(self.paths.module_conf(module), text.encode(), 0o644)
        self.record(user, f"web: PUT userconfig.xml of {module}", 0)

    # ------------------------------------------------------------ session
    async def login(self, call: endpoints.Call) -> web.Response:
        client = call.request.remote or "?"
        try:
            done = await self.auth.login(call.body["user"], call.body["password"], client)
        except auth.TooManyFailures as exc:
            raise ApiError(429, str(exc), retry_after=round(exc.retry_after)) from None
        except HakitError as exc:  # the directory did not answer
            raise ApiError(503, str(exc)) from None
        if done is None:
            self.log(f"failed login for {call.body['user']!r} from {client}")
            raise ApiError(401, "wrong user name or password")
        sid, ident = done
        resp = web.json_response({"user": ident.user, "role": ident.role, "csrf": ident.csrf})
        resp.set_cookie(auth.COOKIE, sid, httponly=True, secure=self.conf.protocol == "https",
                        samesite="Strict", path="/")
        return resp

    def logout(self, call: endpoints.Call) -> web.Response:
        self.auth.logout(call.request.cookies.get(auth.COOKIE, ""))
        resp = web.json_response({"logged_out": True})
        resp.del_cookie(auth.COOKIE, path="/")
        return resp

    def identify(self, request: web.Request) -> auth.Identity | None:
        header = request.headers.get("Authorization", "")
        if header:
            kind, _, token = header.partition(" ")
            if kind.lower() != "bearer":
                raise ApiError(401, "only 'Authorization: Bearer TOKEN' is accepted")
            return self.auth.token(token.strip())
        sid = request.cookies.get(auth.COOKIE)
        return self.auth.session(sid) if sid else None

    # ------------------------------------------------------------ requests
    def _wrap(self, e: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            identity = None
            if e.role is not None:
                identity = self.identify(request)
                if identity is None:
                    raise ApiError(401, "log in first (POST /api/v1/login) or send a bearer token")
                if role_rank(identity.role) < role_rank(e.role):
                    raise ApiError(403, f"{identity.user} ({identity.role}) may not do this: "
                                        f"it needs {e.role}")
                if (e.csrf and request.method not in ("GET", "HEAD") and identity.via != "token"
                        and request.headers.get(auth.CSRF_HEADER) != identity.csrf):
                    raise ApiError(403, f"missing or wrong {auth.CSRF_HEADER} header")
            query = e.parse_query(request)
            body = await e.parse_body(request)
            result = await e.handler(endpoints.Call(self, request, identity, body, query))
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response(result)
        return handle

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        api = request.path.startswith("/api/") or request.path == "/metrics"
        try:
            resp = await handler(request)
        except ApiError as exc:
            resp = web.json_response({"error": str(exc), **exc.extra}, status=exc.status)
            if exc.status == 429:
                resp.headers["Retry-After"] = str(exc.extra.get("retry_after", 60))
        except web.HTTPException as exc:
            if not api:
                raise
            message = f"{exc.reason}: {request.method} {request.path}"
            if exc.status in (404, 405):
                message += " (GET /api/v1/openapi.json lists the endpoints)"
            resp = web.json_response({"error": message}, status=exc.status)
        except HakitError as exc:
            resp = web.json_response({"error": str(exc)}, status=409)
        except Exception as exc:  # a bug costs this request only, and says so in one line
            self.log(f"internal error on {request.method} {request.path}: {type(exc).__name__}: {exc}")
            resp = web.json_response({"error": f"internal error: {type(exc).__name__}"}, status=500)
        if not resp.prepared:
            resp.headers.update(SECURITY_HEADERS)
            if self.conf.protocol == "https":
                resp.headers["Strict-Transport-Security"] = "max-age=31536000"
            if api:
                resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        for e in endpoints.api.endpoints:
            app.router.add_route(e.method, e.path, self._wrap(e))
        app.router.add_get("/api/v1/openapi.json", self._openapi)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        app.router.add_get("/{name:[^/]+}", self._file)
        return app

    async def _openapi(self, _request: web.Request) -> web.Response:
        doc = endpoints.api.openapi()
        doc["paths"]["/metrics"] = {"get": {
            "summary": "This node's metrics, in Prometheus' text format (docs/web.md, \"Metrics\")",
            "description": "Role: any; none with <web metrics=\"open\">.",
            "security": [{"session": []}, {"bearer": []}, {}],
            "responses": {"200": {"description": "OK", "content": {metrics.CONTENT_TYPE: {}}},
                          "401": {"$ref": "#/components/responses/Error"}}}}
        return web.json_response(doc)

    async def _metrics(self, request: web.Request) -> web.Response:
        # Any role may read them; <web metrics="open"> lets a Prometheus without credentials in.
        if self.conf.metrics != "open" and self.identify(request) is None:
            raise ApiError(401, "log in first or send a bearer token (or set <web metrics=\"open\">)")
        text = await asyncio.to_thread(metrics.scrape, self.paths)
        return web.Response(body=text.encode(), headers={"Content-Type": metrics.CONTENT_TYPE})

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        index = CONSOLE / "index.html"
        if not index.is_file():
            return web.Response(body=NOT_BUILT, content_type="text/html")
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = CONSOLE / name
        # One level, a plain name: nothing outside the console's directory can be named.
        if name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Type": kind, "Cache-Control": "no-cache"})

    # ------------------------------------------------------------ listener
    def _settings(self) -> Web:
        with contextlib.suppress(HakitError):
            return load_cluster(self.paths.cluster_xml).web or Web()
        return Web()

    def _tls(self, conf: Web) -> ssl.SSLContext | None:
        if conf.protocol == "http":
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if conf.cert:
            cert, key = Path(conf.cert), Path(conf.key)
        else:
            _ca, cert, key = credentials.credential_files(self.paths)
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError) as exc:
            raise HakitError(f"cannot load the web certificate {cert}: {exc}") from None
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    async def reload(self) -> None:
        """Listen as cluster.xml's <web> says now; a problem is logged, and nothing listens."""
        conf = self._settings()
        self.conf = conf
        self.auth.idle_s = conf.session
        self.auth.directory = self._directory(conf)
        try:
            tls = self._tls(conf) if conf.enabled else None
        except HakitError as exc:
            await self.close()
            self.log(f"not listening: {exc}")
            return
        wanted = (conf.enabled, conf.port, conf.protocol, conf.cert, conf.key, self._credentials_stamp())
        if wanted == self._listening:
            return
        await self.close()
        if not conf.enabled:
            self.log("disabled by <web enabled=\"off\">")
            return
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, port=conf.port, ssl_context=tls, reuse_address=True)
        try:
            await self._site.start()
        except OSError as exc:
            await self.close()
            self.log(f"cannot listen on port {conf.port}: {exc.strerror or exc}")
            return
        self._listening = wanted
        self.log(f"console and API on {conf.protocol}://*:{conf.port}/")

    def _credentials_stamp(self) -> tuple[float, ...]:
        files = [Path(self.conf.cert), Path(self.conf.key)] if self.conf.cert else list(
            credentials.credential_files(self.paths))
        return tuple(f.stat().st_mtime if f.exists() else 0.0 for f in files)

    def _directory(self, conf: Web) -> auth.DirectoryCheck | None:
        if conf.ldap is None:
            return None
        from hakit.node.web.ldap_auth import ldap_role
        ldap = conf.ldap

        async def check(user: str, password: str) -> str | None:
            return await ldap_role(ldap, user, password)
        return check

    async def close(self) -> None:
        self._listening = None
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = self._site = None
        self.peers.close()


async def ship_users(peers: Peers, data: bytes, log: Callable[[str], None]) -> dict[str, str]:
    """The users file to every other node; what each said (a node down gets it at the next change)."""
    try:
        others = [n for n in peers.cluster().node_names if n != peers.me()]
    except HakitError:
        return {}

    async def one(node: str) -> tuple[str, str]:
        try:
            await peers._call(node, "web_users", {"file": data}, 10.0)
            return node, "ok"
        except HakitError as exc:
            log(f"users not shipped to {node}: {exc}")
            return node, str(exc)
    return dict(await asyncio.gather(*(one(n) for n in others)))


def install_users(p: Paths, args: dict[str, Any]) -> dict[str, Any]:
    """The users file another node shipped (RPC op web_users): checked, then replaced whole."""
    data = args.get("file")
    if not isinstance(data, bytes):
        raise HakitError("web_users needs the file's bytes")
    staged = p.web_users.with_name(f".shipped-{time.monotonic_ns()}")
    staged.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        write_atomic(staged, data, 0o600)
        Users(staged)  # refuses a damaged file before it replaces a good one
        staged.replace(p.web_users)
    finally:
        staged.unlink(missing_ok=True)
    return {"users": len(Users(p.web_users).users)}
