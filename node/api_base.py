"""The machinery under the HTTP API: a declarative route table, parameter checking, error format.

Each endpoint is a :class:`Route` that names its parameters with their kinds and limits. The same
table drives three things, so they cannot drift apart: registration with aiohttp, the checking of
every parameter before a handler runs (a handler only ever sees well-formed values), and the
OpenAPI document (``node/openapi.py``).

Errors all have one shape, ``{"error": {"code": STATUS, "message": "..."}}``, including aiohttp's
own 404/405/413 and any unexpected exception, which is logged here and reported as a bare 500 so
that no traceback or internal detail reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

from gossip.crypto import is_node_id

log = logging.getLogger("fedchain.api")

MAX_UINT = 2**63 - 1


class ApiError(Exception):
    """An expected failure with its HTTP status and a message safe to show a client.

    ``close`` ends the connection after the answer: the rest of an unread request body would
    otherwise have to be read (or be taken for the next request).
    """

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


def error_body(status: int, message: str) -> dict:
    return {"error": {"code": status, "message": message}}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, message), status=status, headers=headers)


async def answer_and_close(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """Send ``resp`` now, then close the connection without reading the rest of the request
    (aiohttp would otherwise keep reading an unfinished body for up to 10 s before closing)."""
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    if request.transport is not None:
        request.transport.close()
    return resp


def _http_exception_message(exc: web.HTTPException, request: web.Request) -> str:
    """A useful message for aiohttp's own errors, whose default text is only '404: Not Found'."""
    if isinstance(exc, web.HTTPNotFound):
        return f"no such endpoint: {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"method {request.method} is not allowed on {request.path} (allowed: {', '.join(sorted(exc.allowed_methods))})"
    text = exc.text or ""
    if not text or text.startswith(f"{exc.status}:"):
        return exc.reason
    return text


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    """Turn every error raised while serving a request into the JSON error shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        resp = error_response(exc.status, exc.message)
        return await answer_and_close(request, resp) if exc.close else resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, _http_exception_message(exc, request), headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("internal error serving %s %s", request.method, request.path)
        return error_response(500, "internal error")


# --- parameters -----------------------------------------------------------------------------


def _parse_uint(name: str, raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_UINT:
        raise ApiError(400, f"{name} must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)


def _parse_hash(name: str, raw: str) -> str:
    value = raw.lower()
    if len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise ApiError(400, f"{name} must be 64 hex characters (a SHA-256 hash), got {raw[:80]!r}")
    return value


def _parse_node_id(name: str, raw: str) -> str:
    value = raw.lower()
    if not is_node_id(value):
        raise ApiError(400, f"{name} must be a node id (64 hex characters), got {raw[:80]!r}")
    return value


def _parse_flag(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise ApiError(400, f"{name} must be 1 or 0, got {raw[:40]!r}")


PARSERS: dict[str, Callable[[str, str], Any]] = {
    "uint": _parse_uint,
    "hash": _parse_hash,
    "node_id": _parse_node_id,
    "flag": _parse_flag,
}

SCHEMAS: dict[str, dict] = {
    "uint": {"type": "integer", "minimum": 0, "maximum": MAX_UINT},
    "hash": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
    "node_id": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
    "flag": {"type": "string", "enum": ["0", "1", "true", "false"]},
}


@dataclass(frozen=True)
class Param:
    """One path or query parameter: its kind decides the parser and the OpenAPI schema."""

    name: str
    location: str  # "path" or "query"
    kind: str  # a key of PARSERS
    description: str
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    arg: str = ""  # the handler's keyword when ``name`` is not a Python identifier ("from")

    def __post_init__(self) -> None:
        if self.location not in ("path", "query") or self.kind not in PARSERS:
            raise ValueError(f"bad parameter spec {self.name}: {self.location}/{self.kind}")

    @property
    def key(self) -> str:
        return self.arg or self.name

    @property
    def required(self) -> bool:
        return self.location == "path"

    def parse(self, raw: str | None) -> Any:
        if raw is None:
            return self.default
        value = PARSERS[self.kind](self.name, raw)
        if self.minimum is not None and value < self.minimum:
            raise ApiError(400, f"{self.name} must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ApiError(400, f"{self.name} must be at most {self.maximum}, got {value}")
        return value

    def schema(self) -> dict:
        schema = dict(SCHEMAS[self.kind])
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.default is not None:
            schema["default"] = self.default
        return schema


Handler = Callable[..., Awaitable[Any]]

LIMIT_KINDS = {
    "normal": "the client's request rate and concurrency, and the node's total concurrency",
    "bulk": "as normal, and refused while the client's answer bytes per second are in debt (large answers)",
    "light": "the client's request rate only (constant, tiny work)",
    "tx": "as normal, plus the client's stricter transaction rate",
    "stream": "the client's request rate and concurrency (long-lived; api.max_subscribers bounds the total)",
}


@dataclass(frozen=True)
class Route:
    """One endpoint. ``handler(ctx, request, **params)`` returns a JSON-ready value or a response.

    ``response`` is the OpenAPI schema of a 200 answer; ``errors`` the statuses it may answer
    besides 200 (for the document); ``body`` the OpenAPI request body, for POST.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    params: tuple[Param, ...] = ()
    response: dict = field(default_factory=lambda: {"type": "object"})
    errors: tuple[int, ...] = ()
    body: dict | None = None
    content_type: str = "application/json"
    limit: str = "normal"  # a key of LIMIT_KINDS: which limits of node/api_limits.py apply
    redirect: str = ""  # the route only redirects here (302 with a Location), e.g. / to /dashboard

    def __post_init__(self) -> None:
        if self.limit not in LIMIT_KINDS:
            raise ValueError(f"bad limit kind {self.limit!r} for {self.method} {self.path}")

    def parse_params(self, request: web.Request) -> dict[str, Any]:
        """Check the request's parameters against the spec; unknown or repeated ones are errors."""
        known = {p.name for p in self.params if p.location == "query"}
        for key in request.query:
            if key not in known:
                raise ApiError(400, f"unknown query parameter {key[:40]!r}")
            if len(request.query.getall(key)) > 1:
                raise ApiError(400, f"query parameter {key!r} given more than once")
        values: dict[str, Any] = {}
        for param in self.params:
            source = request.match_info if param.location == "path" else request.query
            values[param.key] = param.parse(source.get(param.name))
        return values


def dumps(value: Any) -> str:
    """Compact ASCII JSON (so characters are bytes); bytes are never JSON-ready here, so a stray
    one is a bug caught by the 500 path."""
    return json.dumps(value, separators=(",", ":"))


async def encode_within(count: int, encode: Callable[[int], Awaitable[str]], budget: int) -> list[str]:
    """``await encode(0)``, ``await encode(1)``, ... (each an item's JSON) up to ``count`` items,
    stopping once the total has reached ``budget`` bytes: the item that reaches it is the last
    one taken, so no work is thrown away and a single large item can always be served (an answer
    holds at most ``budget`` plus one item). Fewer than ``count`` parts means the budget cut it.

    Items are produced and encoded one at a time, yielding to the event loop between them, so a
    long list neither sits in memory whole nor stalls the loop while it is encoded.
    """
    parts: list[str] = []
    size = 0
    for i in range(count):
        if size >= budget:
            break
        text = await encode(i)
        parts.append(text)
        size += len(text) + 1
        await asyncio.sleep(0)
    return parts


async def encode_list_within(items: list[Any], budget: int) -> list[str]:
    """:func:`encode_within` over a list of JSON-ready values."""

    async def encode(i: int) -> str:
        return dumps(items[i])

    return await encode_within(len(items), encode, budget)


def page_response(fields: dict[str, Any], key: str, parts: list[str]) -> web.Response:
    """``{**fields, key: [parts...]}`` as a JSON answer, joined from already-encoded parts."""
    head = dumps(fields)[:-1]
    body = f'{head}{"," if fields else ""}"{key}":[{",".join(parts)}]}}'
    return web.Response(text=body, content_type="application/json")


def bind(route: Route, ctx: Any) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for ``route``: checked parameters in, JSON (or the handler's response) out."""

    async def handle(request: web.Request) -> web.StreamResponse:
        params = route.parse_params(request)
        result = await route.handler(ctx, request, **params)
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result, dumps=dumps)

    return handle
