"""A client of hakitd's web API, as a script or the console would be: HTTPS checked against the
cluster's CA (the node certificates' names are not the addresses used), a session cookie with
its CSRF token, or a bearer token."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PORT = 9453


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return str(self.json().get("error", ""))


@dataclass
class Client:
    addr: str
    ca: Path
    cookie: str = ""
    csrf: str = ""
    token: str = ""
    port: int = PORT
    extra_headers: dict[str, str] = field(default_factory=dict)

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.check_hostname = False
        return ctx

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60.0) -> Reply:
        conn = http.client.HTTPSConnection(self.addr, self.port, context=self._context(), timeout=timeout)
        hdrs = {**self.extra_headers, **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        if self.cookie:
            hdrs.setdefault("Cookie", self.cookie)
            if method not in ("GET", "HEAD") and self.csrf:
                hdrs.setdefault("X-CSRF-Token", self.csrf)
        if self.token:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def login(self, user: str, password: str) -> Reply:
        reply = self.request("POST", "/api/v1/login", {"user": user, "password": password})
        if reply.status == 200:
            self.cookie = reply.headers["set-cookie"].split(";", 1)[0]
            self.csrf = reply.json()["csrf"]
        return reply

    def events(self, path: str, count: int, timeout: float = 30.0) -> list[tuple[str, Any]]:
        """The first `count` server-sent events of a stream (comment lines skipped)."""
        conn = http.client.HTTPSConnection(self.addr, self.port, context=self._context(), timeout=timeout)
        hdrs = {"Cookie": self.cookie} if self.cookie else {"Authorization": f"Bearer {self.token}"}
        try:
            conn.request("GET", path, headers=hdrs)
            resp = conn.getresponse()
            if resp.status != 200 or resp.getheader("Content-Type") != "text/event-stream":
                raise AssertionError(f"{path}: {resp.status} {resp.read()!r}")
            out: list[tuple[str, Any]] = []
            kind = ""
            while len(out) < count:
                line = resp.fp.readline().decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    out.append((kind, json.loads(line[6:])))
            return out
        finally:
            conn.close()
