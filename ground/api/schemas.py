"""Request schemas of the client interface: every route's query, path and body, checked first.

A request that does not match its route's schema is answered ``400 {"error": ...}`` before
any handler runs, so handlers only ever see values of the stated type and range:

- numbers finite and inside the stated range (no NaN, no 1e308 minutes, no negative limits);
  integers written as integers;
- booleans strict: JSON ``true``/``false`` in bodies, ``1``/``0``/``true``/``false`` in queries;
- strings bounded and free of control characters; names (nodes, packets, commands) match
  ``[A-Za-z0-9_.-]``;
- ``args`` a JSON object of at most ``MAX_ARGS`` integer or name values;
- no field the route does not know.

Sizes: bodies at most ``MAX_BODY`` bytes (413 above, checked by aiohttp), the request
line and each header at most ``MAX_LINE`` bytes, queries at most ``MAX_QUERY`` bytes.
docs/ground-api.md lists every route's fields and ranges; ``SCHEMAS`` is that list.

    app = web.Application(middlewares=[schemas.middleware], client_max_size=schemas.MAX_BODY,
                          handler_args=schemas.HANDLER_ARGS)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ground.errors import GroundError

MAX_BODY = 64 * 1024
MAX_QUERY = 4096
MAX_LINE = 8190
MAX_ARGS = 32
MAX_WS_MESSAGE = 4096
#: aiohttp's request parser limits (the request line and each header)
HANDLER_ARGS: dict[str, Any] = {"max_line_size": MAX_LINE, "max_field_size": MAX_LINE}

T_MIN, T_MAX = 0.0, 4102444800.0  # Unix times accepted: 1970 .. 2100
INT_MAX = 2**53  # ids and counters (exact in JSON numbers)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_INT = re.compile(r"^[+-]?[0-9]{1,19}$")


class SchemaError(GroundError, ValueError):
    """A request field outside its schema (answered 400)."""


@dataclass(frozen=True)
class F:
    """One field: kind is "int", "num", "bool", "name", "text", "args" or "id"."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    required: bool = False
    nullable: bool = False
    max_len: int = 64

    def check(self, where: str, key: str, v: Any, from_query: bool) -> Any:
        label = f"{where} {key!r}"
        if v is None:
            if self.nullable and not self.required:
                return None
            raise SchemaError(f"{label} must not be null")
        k = self.kind
        if k == "bool":
            if from_query:
                if v not in ("1", "0", "true", "false"):
                    raise SchemaError(f"{label} must be 1, 0, true or false")
                return v in ("1", "true")
            if not isinstance(v, bool):
                raise SchemaError(f"{label} must be true or false")
            return v
        if k in ("int", "num"):
            return self._number(label, v, from_query)
        if k in ("name", "text"):
            if not isinstance(v, str):
                raise SchemaError(f"{label} must be a string")
            if len(v) > self.max_len:
                raise SchemaError(f"{label} is longer than {self.max_len} characters")
            if k == "name" and not _NAME.match(v):
                raise SchemaError(f"{label} must be 1-64 of A-Z a-z 0-9 _ . -")
            if k == "text" and not v.isprintable():
                raise SchemaError(f"{label} holds control characters")
            return v
        if k == "args":
            if not isinstance(v, dict):
                raise SchemaError(f"{label} must be a JSON object of argument name -> value")
            if len(v) > MAX_ARGS:
                raise SchemaError(f"{label} has more than {MAX_ARGS} arguments")
            for name, x in v.items():
                if not _NAME.match(name):
                    raise SchemaError(f"{label}: argument name {name[:64]!r} must be 1-64 of A-Z a-z 0-9 _ . -")
                if isinstance(x, str):
                    if not _NAME.match(x):
                        raise SchemaError(f"{label}: {name} must be an integer or an enum name")
                elif isinstance(x, bool) or not isinstance(x, int) or abs(x) > INT_MAX:
                    raise SchemaError(f"{label}: {name} must be an integer or an enum name")
            return v
        raise AssertionError(k)

    def _number(self, label: str, v: Any, from_query: bool) -> float | int:
        if from_query:
            if not isinstance(v, str) or len(v) > 32:
                raise SchemaError(f"{label} must be a number")
            if self.kind == "int":
                if not _INT.match(v):
                    raise SchemaError(f"{label} must be an integer")
                x: float | int = int(v)
            else:
                try:
                    x = float(v)
                except ValueError:
                    raise SchemaError(f"{label} must be a number") from None
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SchemaError(f"{label} must be a number")
            if self.kind == "int" and not isinstance(v, int):
                raise SchemaError(f"{label} must be an integer")
            x = v
        if not math.isfinite(x):
            raise SchemaError(f"{label} must be finite")
        if (self.lo is not None and x < self.lo) or (self.hi is not None and x > self.hi):
            raise SchemaError(f"{label} must be in [{self.lo:g}, {self.hi:g}]")
        return x


@dataclass(frozen=True)
class Schema:
    """What one route accepts: path parameters, query parameters and JSON body fields."""

    path: dict[str, F] = field(default_factory=dict)
    query: dict[str, F] = field(default_factory=dict)
    body: dict[str, F] | None = None  # None: the route takes no body

    def check_path(self, match: dict[str, str]) -> None:
        for k, f in self.path.items():
            f.check("path parameter", k, match.get(k), True)

    def check_query(self, q: Any) -> None:
        extra = sorted(set(q.keys()) - set(self.query))
        if extra:
            raise SchemaError(f"unknown query parameter(s) {[e[:64] for e in extra[:5]]}; "
                              f"this route takes {sorted(self.query) or 'none'}")
        for k in set(q.keys()):
            if len(q.getall(k)) > 1:
                raise SchemaError(f"query parameter {k!r} given more than once")
        for k, f in self.query.items():
            v = q.get(k)
            if v is None or v == "":
                if f.required:
                    raise SchemaError(f"query parameter {k!r} is required")
                continue
            f.check("query parameter", k, v, True)

    def check_body(self, b: Any) -> None:
        assert self.body is not None
        if not isinstance(b, dict):
            raise SchemaError("the request body must be a JSON object")
        extra = sorted(set(b) - set(self.body))
        if extra:
            raise SchemaError(f"unknown field(s) {[str(e)[:64] for e in extra[:5]]}; "
                              f"this route takes {sorted(self.body)}")
        for k, f in self.body.items():
            if k not in b:
                if f.required:
                    raise SchemaError(f"field {k!r} is required")
                continue
            f.check("field", k, b[k], False)


_ID = F("int", 1, INT_MAX, required=True)
_LIMIT = F("int", 1, 10000)
_TIME = F("num", T_MIN, T_MAX)
_USER = F("text", max_len=64)
_USER_BODY = {"user": F("text", max_len=64, nullable=True)}

#: every route of the client interface: (method, path pattern) -> Schema
SCHEMAS: dict[tuple[str, str], Schema] = {
    ("GET", "/api/health"): Schema(),
    ("GET", "/api/nodes"): Schema(),
    ("GET", "/api/latest"): Schema(query={"node": F("name", required=True)}),
    ("GET", "/api/params"): Schema(query={
        "node": F("name", required=True), "packet": F("name"), "field": F("name"),
        "param": F("name", max_len=129), "since": _TIME, "until": _TIME, "limit": _LIMIT}),
    ("GET", "/api/alarms"): Schema(query={"all": F("bool"), "shelved": F("bool"), "limit": _LIMIT}),
    ("POST", "/api/alarms/{id}/ack"): Schema(path={"id": _ID}, body=_USER_BODY),
    ("POST", "/api/alarms/{id}/shelve"): Schema(path={"id": _ID}, body={
        "minutes": F("num", 0.1, 7 * 24 * 60), **_USER_BODY}),
    ("POST", "/api/alarms/{id}/unshelve"): Schema(path={"id": _ID}, body=_USER_BODY),
    ("GET", "/api/events"): Schema(query={
        "since": _TIME, "limit": _LIMIT, "node": F("name"), "kind": F("name"), "after_id": F("int", 0, INT_MAX)}),
    ("GET", "/api/dictionary"): Schema(),
    ("POST", "/api/commands"): Schema(body={
        "node": F("name", required=True), "command": F("name", required=True), "args": F("args", nullable=True),
        "user": F("text", max_len=64, nullable=True), "confirm": F("bool", nullable=True),
        "not_before": F("num", T_MIN, T_MAX, nullable=True), "not_after": F("num", T_MIN, T_MAX, nullable=True)}),
    ("GET", "/api/commands"): Schema(query={"limit": _LIMIT}),
    ("GET", "/api/commands/{id}"): Schema(path={"id": _ID}, query={"wait": F("num", 0, 300)}),
    ("POST", "/api/commands/{id}/cancel"): Schema(path={"id": _ID}, body=_USER_BODY),
    ("GET", "/api/packets"): Schema(query={"node": F("name", required=True), "limit": F("int", 1, 1000)}),
    ("GET", "/api/links"): Schema(),
    ("GET", "/api/gaps"): Schema(query={"node": F("name"), "state": F("name", max_len=16), "limit": F("int", 1, 2000)}),
    ("GET", "/api/seismic"): Schema(query={
        "node": F("name", required=True), "seconds": F("num", 0.01, 3600), "max_points": F("int", 1, 20000)}),
    ("GET", "/api/ws"): Schema(),
    # two-person rule and access (ground/auth; docs/ground-api.md "Access")
    ("POST", "/api/commands/{id}/approve"): Schema(path={"id": _ID}, body=_USER_BODY),
    ("POST", "/api/commands/{id}/deny"): Schema(path={"id": _ID}, body={"reason": F("text", max_len=200), **_USER_BODY}),
    ("POST", "/api/auth/login"): Schema(body={"username": F("text", max_len=64, required=True),
                                              "password": F("text", max_len=1024, required=True)}),
    ("POST", "/api/auth/refresh"): Schema(body={"refresh_token": F("text", max_len=200, required=True)}),
    ("POST", "/api/auth/logout"): Schema(body={}),
    ("GET", "/api/auth/me"): Schema(),
    ("GET", "/api/auth/keys"): Schema(),
    ("POST", "/api/auth/keys"): Schema(body={"password": F("text", max_len=1024, required=True),
                                             "label": F("text", max_len=100)}),
    ("POST", "/api/auth/keys/{id}/revoke"): Schema(path={"id": F("name", required=True)}, body=_USER_BODY),
    ("GET", "/api/auth/users"): Schema(),
}


#: routes that check their own input instead (files served by path; the web console's saved
#: objects, whose body is an Open MCT document checked by its handler with its own cap);
#: tests/ground/test_api_hostile.py fails on a route in neither SCHEMAS nor EXEMPT
EXEMPT: set[tuple[str, str]] = {
    ("GET", "/"), ("GET", "/console"), ("GET", "/console/{path}"), ("GET", "/openmct/{path}"),
    ("PUT", "/api/web/objects/{key}"),
}


def schema_for(req: web.Request) -> Schema | None:
    """The schema of the route ``req`` matched (None: no schema, e.g. 404 or a static file)."""
    route = req.match_info.route
    resource = route.resource
    if resource is None:
        return None
    method = "GET" if req.method == "HEAD" else req.method
    return SCHEMAS.get((method, resource.canonical))


def check(schema: Schema, req: web.Request, body: Any) -> None:
    """Raise SchemaError unless the request's path, query and (parsed) body match ``schema``."""
    schema.check_path(dict(req.match_info))
    schema.check_query(req.query)
    if schema.body is not None and body is not None:
        schema.check_body(body)




def _error(status: int, msg: str) -> web.Response:
    return web.Response(text=json.dumps({"error": msg}), status=status, content_type="application/json")


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the request against its route's schema; 400/413 with a JSON reason if it does not match.

    aiohttp's own plain-text errors (404, 405, 413 ...) are answered as JSON too.
    """
    try:
        return await _checked(request, handler)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        return _error(e.status, e.reason)


async def _checked(req: web.Request, handler: Handler) -> web.StreamResponse:
    schema = schema_for(req)
    if schema is None:
        return await handler(req)
    if len(req.query_string) > MAX_QUERY:
        return _error(414, f"query longer than {MAX_QUERY} bytes")
    body: Any = None
    if req.body_exists:
        if schema.body is None:
            return _error(400, "this route takes no request body")
        try:
            raw = await req.read()  # aiohttp caps this at client_max_size (413 above)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body larger than {MAX_BODY} bytes")
        if raw:
            try:
                body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
            except (ValueError, RecursionError) as e:
                return _error(400, f"the request body is not JSON: {str(e)[:100]}")
    try:
        check(schema, req, body)
    except SchemaError as e:
        return _error(400, str(e))
    return await handler(req)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
