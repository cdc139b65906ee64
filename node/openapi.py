"""The OpenAPI 3.1 document of the node's HTTP API, generated from the route table.

Paths, parameters, their schemas and limits, request bodies and error statuses all come from the
same :class:`node.api_base.Route` objects that register and check the routes, so the document
cannot describe an API other than the one served. The component schemas below describe the
shapes of the chain's JSON objects (``Block.to_json`` and friends in ``consensus/block.py``,
``consensus/tx.py`` and ``consensus/messages.py``).
"""

from __future__ import annotations

from typing import Iterable

from node.api_base import LIMIT_KINDS, Route

HEX32 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
HEX = {"type": "string", "pattern": "^([0-9a-f]{2})*$"}

COMPONENTS: dict[str, dict] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "integer", "description": "The HTTP status."},
            "message": {"type": "string"}}}},
    },
    "Tx": {
        "type": "object",
        "properties": {"hash": HEX32, "kind": {"type": "string",
                                                "enum": ["transfer", "stake", "unstake", "vote", "register"]},
                       "sender": HEX32, "nonce": {"type": "integer"}, "args": {"type": "array"}},
    },
    "Commit": {
        "type": ["object", "null"],
        "properties": {
            "height": {"type": "integer"}, "block_hash": HEX32,
            "signatures": {"type": "array", "items": {"type": "object", "properties": {
                "voter": HEX32, "signature": HEX}}},
            "raw": {**HEX, "description": "msgpack of the commit's wire form."},
        },
    },
    "Block": {
        "type": "object",
        "properties": {
            "hash": HEX32, "height": {"type": "integer"}, "slot": {"type": "integer"},
            "time_ms": {"type": "integer"}, "parent_hash": HEX32, "producer": HEX32,
            "state_root": HEX32, "app_hash": HEX, "payload_hash": HEX32, "payload_size": {"type": "integer"},
            "txs": {"type": "array", "items": {"$ref": "#/components/schemas/Tx"}},
            "evidence": {"type": "array", "items": {"type": "object"}},
            "last_commit": {"$ref": "#/components/schemas/Commit"},
            "signature": HEX,
            "raw": {**HEX, "description": "msgpack of the block's wire form, to verify signatures."},
        },
    },
    "BlockPage": {
        "type": "object",
        "required": ["blocks", "height", "next"],
        "properties": {
            "blocks": {"type": "array", "items": {"$ref": "#/components/schemas/Block"}},
            "height": {"type": "integer", "description": "The node's latest height."},
            "next": {"type": ["integer", "null"],
                     "description": "Height to pass as `from` for the rest; null when the page reached `height`."},
        },
    },
    "Mempool": {
        "type": "object",
        "required": ["size", "truncated", "txs"],
        "properties": {
            "size": {"type": "integer", "description": "Transactions pending in all."},
            "truncated": {"type": "boolean", "description": "Some were left out to keep the answer within the "
                                                            "node's api.max_response_bytes."},
            "txs": {"type": "array", "items": {"$ref": "#/components/schemas/Tx"}},
        },
    },
}

_STATUS_TEXT = {400: "Bad parameter", 404: "Not found", 408: "Body not received in time", 413: "Body too large",
                415: "Unsupported content type", 422: "Invalid transaction",
                429: "Too many requests from this address, or the node is busy (see Retry-After)",
                503: "Not ready"}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                "schema": {"type": "integer", "minimum": 1}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(route: Route) -> dict:
    op: dict = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": route.handler.__name__.lstrip("_"),
        "responses": {"200": {"description": "OK", "content": {route.content_type: {"schema": route.response}}}},
    }
    if route.redirect:
        op["responses"] = {"302": {"description": f"Redirect to {route.redirect}",
                                   "headers": {"Location": {"schema": {"type": "string", "const": route.redirect}}}}}
    if route.params:
        op["parameters"] = [
            {"name": p.name, "in": p.location, "required": p.required, "description": p.description,
             "schema": p.schema()}
            for p in route.params
        ]
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": route.body}
    statuses = set(route.errors) | ({400} if route.params else set()) | {429}
    for status in sorted(statuses):
        op["responses"][str(status)] = {"description": _STATUS_TEXT.get(status, "Error"),
                                        "content": {"application/json": {"schema": _ref("Error")}}}
    op["responses"]["429"]["headers"] = _RETRY_AFTER
    op["x-limits"] = LIMIT_KINDS[route.limit]
    return op


def build_openapi(routes: Iterable[Route], *, title: str, version: str, description: str = "") -> dict:
    """The OpenAPI document for ``routes``."""
    paths: dict[str, dict] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": COMPONENTS},
    }
