"""Declaring the API's endpoints once: method, path, the least role allowed, the body and query
they accept.  Requests are checked against these declarations (unknown fields refused, types
and values checked) and the OpenAPI document is generated from them, so the two cannot drift."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from hakit import __version__

Handler = Callable[..., Awaitable[Any]]

_JSON_TYPES: dict[type, str] = {str: "string", bool: "boolean", int: "integer", dict: "object",
                                list: "array", float: "number"}


class ApiError(Exception):
    """Answered as {"error": message} with the status."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


@dataclass(frozen=True)
class Field:
    kind: type
    doc: str
    required: bool = False
    enum: tuple[str, ...] = ()
    items: type | None = None  # of a list
    max_len: int = 1 << 20

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": _JSON_TYPES[self.kind], "description": self.doc}
        if self.enum:
            out["enum"] = list(self.enum)
        if self.items is not None:
            out["items"] = {"type": _JSON_TYPES[self.items]}
        if self.kind is dict:
            out["additionalProperties"] = {"type": "string"}
        return out

    def check(self, name: str, value: Any) -> Any:
        ok = isinstance(value, self.kind) and not (self.kind is int and isinstance(value, bool))
        if not ok:
            raise ApiError(400, f"'{name}' must be a {_JSON_TYPES[self.kind]}")
        if self.enum and value not in self.enum:
            raise ApiError(400, f"'{name}' must be one of {', '.join(self.enum)}, not {value!r}")
        if isinstance(value, str | list | dict) and len(value) > self.max_len:
            raise ApiError(400, f"'{name}' is too long")
        if self.items is not None and not all(isinstance(v, self.items) for v in value):
            raise ApiError(400, f"'{name}' must be a list of {_JSON_TYPES[self.items]}s")
        if self.kind is dict and not all(isinstance(v, str) for v in value.values()):
            raise ApiError(400, f"the values of '{name}' must be strings")
        return value


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    role: str | None  # None: no authentication
    summary: str
    handler: Handler
    body: dict[str, Field] | None = None
    query: dict[str, Field] = field(default_factory=dict)
    answers: str = "application/json"
    csrf: bool = True  # False only for login, which has no session yet

    def parse_query(self, request: web.Request) -> dict[str, Any]:
        unknown = set(request.query) - set(self.query)
        if unknown:
            raise ApiError(400, f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        out: dict[str, Any] = {}
        for name, f in self.query.items():
            raw = request.query.get(name)
            if raw is None:
                if f.required:
                    raise ApiError(400, f"query parameter '{name}' is required")
                continue
            if f.kind is int:
                try:
                    out[name] = int(raw)
                except ValueError:
                    raise ApiError(400, f"query parameter '{name}' must be an integer") from None
            else:
                out[name] = f.check(name, raw)
        return out

    async def parse_body(self, request: web.Request) -> dict[str, Any]:
        if self.body is None:
            return {}
        try:
            raw = await request.read()
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        unknown = set(body) - set(self.body)
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}; "
                                f"accepted: {', '.join(self.body) or 'none'}")
        for name, f in self.body.items():
            if name in body:
                f.check(name, body[name])
            elif f.required:
                raise ApiError(400, f"field '{name}' is required")
        return body


class Api:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def add(self, method: str, path: str, role: str | None, summary: str, *,
            body: dict[str, Field] | None = None, query: dict[str, Field] | None = None,
            answers: str = "application/json", csrf: bool = True) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(Endpoint(method, path, role, summary, handler, body, query or {},
                                           answers, csrf))
            return handler
        return register

    def openapi(self) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        for e in self.endpoints:
            op: dict[str, Any] = {
                "summary": e.summary,
                "description": f"Role: {e.role or 'none (no authentication)'}.",
                "responses": {"200": {"description": "OK", "content": {e.answers: {}}},
                              "400": {"$ref": "#/components/responses/Error"},
                              **({"401": {"$ref": "#/components/responses/Error"},
                                  "403": {"$ref": "#/components/responses/Error"}} if e.role else {})},
            }
            if e.role:
                op["security"] = [{"session": []}, {"bearer": []}]
            params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                      for n in _path_params(e.path)]
            params += [{"name": n, "in": "query", "required": f.required, "description": f.doc,
                        "schema": {"type": _JSON_TYPES[f.kind], **({"enum": list(f.enum)} if f.enum else {})}}
                       for n, f in e.query.items()]
            if params:
                op["parameters"] = params
            if e.body is not None:
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {n: f.schema() for n, f in e.body.items()},
                    "required": [n for n, f in e.body.items() if f.required]}}}}
            paths.setdefault(e.path, {})[e.method.lower()] = op
        return {
            "openapi": "3.1.0",
            "info": {"title": "hakit API", "version": __version__,
                     "description": "The cluster seen from any of its nodes (docs/web.md)."},
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "session": {"type": "apiKey", "in": "cookie", "name": "hakit_session",
                                "description": "From POST /api/v1/login; changes also need X-CSRF-Token."},
                    "bearer": {"type": "http", "scheme": "bearer",
                               "description": "A token from POST /api/v1/tokens or `hakit web token add`."},
                },
                "responses": {"Error": {"description": "Refused", "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"error": {"type": "string"}},
                               "required": ["error"]}}}}},
            },
        }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
