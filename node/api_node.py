"""Node endpoints: health, status, peers, genesis, metrics, transaction submission, event stream.

``POST /txs`` reads its body under an explicit cap (the node's ``api.max_body``, never more than
``network.max_message``) and deadline (``api.request_timeout_ms``) before decoding, so an
oversized or slow body costs a bounded amount of memory and time; the transaction then goes to
the engine, which decides whether the mempool takes it.
``/subscribe`` is a WebSocket that relays the engine's events as JSON; a slow subscriber loses
its oldest events (the engine's queue is bounded), it never slows the engine down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from consensus.engine import TxRejected
from consensus.tx import Tx
from gossip.codec import DecodeError, unpack
from node.api_base import ApiError, Route

VERSION = "0.1.0"
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


def _plain(value: Any) -> Any:
    """JSON-ready form of peer records and event payloads (dataclasses as dicts, bytes as hex)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


async def get_health(ctx: Any, request: web.Request) -> dict:
    return {"ok": True}


async def get_status(ctx: Any, request: web.Request) -> dict:
    """The engine's status plus who this node is and how many peers it has."""
    status = dict(ctx.engine.status())
    status.update({
        "moniker": ctx.config.moniker,
        "url": ctx.config.network.url,
        "version": VERSION,
        "peers": len(ctx.gossip.peers()),
    })
    return status


async def get_net_info(ctx: Any, request: web.Request) -> dict:
    """Connected peers with their score and the last measured round trip (``node/telemetry.py``)."""
    rtts = ctx.telemetry.peer_rtts()
    peers = [{**_plain(p), "rtt_ms": round(rtts[p.node_id] * 1000, 3) if p.node_id in rtts else None}
             for p in ctx.gossip.peers()]
    return {"url": ctx.config.network.url, "max_peers": ctx.config.network.max_peers,
            "n_peers": len(peers), "peers": peers,
            "banned": [{"node_id": nid, "seconds_left": left} for nid, left in sorted(ctx.gossip.banned().items())]}


async def get_genesis(ctx: Any, request: web.Request) -> web.Response:
    """The genesis exactly as ``Genesis.save`` writes ``genesis.json`` (same bytes)."""
    return web.Response(text=ctx.genesis_text, content_type="application/json")


async def get_metrics(ctx: Any, request: web.Request) -> web.Response:
    """The node's metrics (``node/prometheus.py``), in the text format the scraper's Accept asks for."""
    body, content_type = ctx.telemetry.metrics.exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refusing (413) as soon as it exceeds ``limit`` bytes, or (408) when it
    has not fully arrived within ``timeout_s``: a client dribbling a body must not hold a slot
    for ever. Either refusal closes the connection (the rest of the body is never read)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"body of {request.content_length} bytes exceeds the limit of {limit}", close=True)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"body exceeds the limit of {limit} bytes", close=True)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"the body did not arrive within {timeout_s:g} s", close=True) from None
    return b"".join(chunks)


def _tx_bytes(body: bytes, is_json: bool) -> bytes:
    """The msgpack bytes of the submitted transaction, from either accepted body format."""
    if not is_json:
        return body
    try:
        doc = json.loads(body)
    except ValueError:
        raise ApiError(400, "body is not valid JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"tx"} or not isinstance(doc["tx"], str):
        raise ApiError(400, 'JSON body must be {"tx": "<hex of the msgpack transaction>"}')
    try:
        return bytes.fromhex(doc["tx"])
    except ValueError:
        raise ApiError(400, "tx is not valid hex") from None


async def post_tx(ctx: Any, request: web.Request) -> dict:
    """Decode, check shape, and hand the transaction to the engine; 422 says why it was refused."""
    limit = min(ctx.config.api.max_body, ctx.config.network.max_message)
    if request.content_type not in (*MSGPACK_TYPES, "application/json"):
        raise ApiError(415, "content type must be application/msgpack or application/json, "
                            f"not {request.content_type!r}")
    body = await read_body(request, limit, ctx.config.api.request_timeout_ms / 1000)
    raw = _tx_bytes(body, request.content_type == "application/json")
    if not raw:
        raise ApiError(400, "empty transaction")
    try:
        tx = Tx.from_wire(unpack(raw, limit))
    except DecodeError as exc:
        raise ApiError(400, f"malformed transaction: {exc}") from None
    try:
        return {"hash": await ctx.engine.submit_tx(tx)}
    except TxRejected as exc:
        raise ApiError(422, f"transaction rejected: {exc}") from None


async def _relay_events(queue: asyncio.Queue, ws: web.WebSocketResponse) -> None:
    while True:
        event = await queue.get()
        await ws.send_str(json.dumps(_plain(event), separators=(",", ":")))


async def subscribe(ctx: Any, request: web.Request) -> web.WebSocketResponse:
    """Stream engine events (new_block, final_block, evidence, ...) as JSON text frames."""
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "/subscribe is a WebSocket endpoint; send an Upgrade request")
    if len(ctx.subscribers) >= ctx.config.api.max_subscribers:
        raise ApiError(503, f"too many subscribers (at most {ctx.config.api.max_subscribers})")
    ctx.subscribers.add(ws)
    queue = ctx.engine.subscribe()
    relay: asyncio.Task | None = None
    try:
        await ws.prepare(request)
        relay = asyncio.create_task(_relay_events(queue, ws))
        async for msg in ws:  # clients send nothing we act on; reading detects their close
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        if relay is not None:
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
        ctx.engine.unsubscribe(queue)
        ctx.subscribers.discard(ws)
    return ws


async def close_subscribers(ctx: Any) -> None:
    """At shutdown, say goodbye to every ``/subscribe`` client (1001, going away): otherwise the
    server's graceful shutdown waits for these long-lived handlers for up to a minute."""
    await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"node stopping")
                           for ws in list(ctx.subscribers)), return_exceptions=True)


async def get_openapi(ctx: Any, request: web.Request) -> dict:
    return ctx.openapi


TX_BODY = {
    "application/msgpack": {"schema": {"type": "string", "format": "binary",
                                       "description": "msgpack of Tx.to_wire(): [kind, chain_id, sender, nonce, "
                                                      "args, signature]"}},
    "application/json": {"schema": {"type": "object", "required": ["tx"], "additionalProperties": False,
                                    "properties": {"tx": {"type": "string", "description": "hex of the msgpack"}}}},
}

NODE_ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", get_health, "Liveness: answers while the node serves.", "node",
          response={"type": "object", "properties": {"ok": {"type": "boolean"}}}, limit="light"),
    Route("GET", "/status", get_status, "Identity, heights, sync state and peer count of this node.", "node"),
    Route("GET", "/net_info", get_net_info, "Connected gossip peers (score, round trip of GET /health in ms), and the "
          "node ids banned for misbehaviour.", "node"),
    Route("GET", "/genesis", get_genesis, "The chain's genesis file.", "node", limit="bulk"),
    Route("GET", "/metrics", get_metrics, "Prometheus metrics: text format 0.0.4, or OpenMetrics when the "
          "Accept header asks for it.", "node",
          response={"type": "string"}, content_type="text/plain"),
    Route("POST", "/txs", post_tx, "Submit a signed transaction.", "state",
          response={"type": "object", "properties": {"hash": {"type": "string"}}},
          errors=(400, 408, 413, 415, 422), body=TX_BODY, limit="tx"),
    Route("GET", "/subscribe", subscribe, "WebSocket stream of JSON events: new_block, final_block, evidence.",
          "node", errors=(400, 503), limit="stream"),
    Route("GET", "/openapi.json", get_openapi, "This OpenAPI document.", "node"),
)
