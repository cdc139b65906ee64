"""Rate and concurrency limits of the HTTP API, per client address and in total.

One middleware, outermost, so a refused request costs almost nothing:

* every client address (an IPv6 client is its /64, which one subscriber usually holds whole)
  has a token bucket of ``api.requests_per_s`` refilled up to ``api.request_burst``; a request
  takes one token when it arrives;
* and a bucket of answer bytes, ``api.answer_bytes_per_s`` refilled up to one second's worth:
  each answer is charged its size once sent, and while the bucket is in debt the client's
  requests for bulk answers (blocks, pages, blobs) wait until it is repaid, so they are slowed
  down in proportion to the work and bandwidth they cost, not to their count; its small
  requests (a status, a commit) still go through. A bulk request pre-pays
  ``api.max_response_bytes`` when admitted (refunded down to its real size once sent), so a
  client never has more bulk answers in the making or unread than its budget covers;
* ``POST /txs`` also takes a token of a stricter bucket (``api.txs_per_s``/``api.tx_burst``):
  each transaction costs a signature check and mempool work, and floods fill the mempool;
* at most ``api.max_inflight_per_client`` requests of one client and ``api.max_inflight`` of all
  clients are served at once, counted until the answer is fully sent, so a client that does
  not read its answers holds its own slots and memory, not everybody's. An answer not taken by
  the client within ``api.request_timeout_ms`` has its connection cut.

A refused request is answered ``429`` with the JSON error shape and ``Retry-After`` (seconds).
Over its rate, the connection stays open (closing it would leave the node, the side closing
first, with a socket in TIME_WAIT per refusal under a flood); over a concurrency cap, it is
closed, since that client already holds enough connections.

``/health`` takes a token but no concurrency slot (it is constant work and is what operators
and supervisors probe while the node is under load); ``/subscribe`` is held open for a long
time, so it counts against its client's concurrency but not the total, which
``api.max_subscribers`` bounds. Routes the API does not own (the gossip ``/p2p`` endpoint,
which has its own per-peer limits) are left alone.

The table of clients is bounded (least recently seen forgotten first), so a sweep over many
addresses costs a fixed amount of memory.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from aiohttp import web

from node.api_base import Route, answer_and_close, error_response
from node.config_api import ApiConfig

MAX_CLIENTS = 4096
"""Client addresses remembered at once."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; a charge may leave it in debt (negative)."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there will be."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def charge(self, amount: float, now: float) -> None:
        """Take ``amount`` tokens, going into debt if there are fewer."""
        self._refill(now)
        self.tokens -= amount

    def debt(self, now: float) -> float:
        """0.0 if the bucket is not in debt, else the seconds until it is repaid."""
        self._refill(now)
        return 0.0 if self.tokens > 0 else (1 - self.tokens) / self.rate


@dataclass
class Client:
    requests: TokenBucket
    answer_bytes: TokenBucket
    txs: TokenBucket
    inflight: int = 0


@dataclass
class LimitStats:
    """Refusals by reason and cut answers, exported on ``/metrics``."""

    refused: dict[str, int] = field(default_factory=lambda: {"rate": 0, "bytes": 0, "tx_rate": 0,
                                                              "client_busy": 0, "node_busy": 0})
    cut: int = 0


def client_key(remote: str | None) -> str:
    """The address a client is limited by: IPv4 as is, IPv6 by its /64 (IPv4-mapped as IPv4)."""
    if not remote:
        return "unknown"
    try:
        addr = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class Limiter:
    """The per-client and total limits of one node's API (see the module docstring)."""

    def __init__(self, config: ApiConfig, routes: tuple[Route, ...], *,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = MAX_CLIENTS) -> None:
        self.config = config
        self.kinds = {(r.method, r.path): r.limit for r in routes}
        self.clock = clock
        self.max_clients = max_clients
        self.clients: OrderedDict[str, Client] = OrderedDict()
        self.inflight = 0
        self.stats = LimitStats()

    def client(self, key: str) -> Client:
        client = self.clients.get(key)
        now = self.clock()
        if client is None:
            cfg = self.config
            client = Client(TokenBucket(cfg.requests_per_s, cfg.request_burst, cfg.request_burst, now),
                            TokenBucket(cfg.answer_bytes_per_s, cfg.answer_bytes_per_s, cfg.answer_bytes_per_s, now),
                            TokenBucket(cfg.txs_per_s, cfg.tx_burst, cfg.tx_burst, now))
            self.clients[key] = client
            if len(self.clients) > self.max_clients:
                self.clients.popitem(last=False)
        else:
            self.clients.move_to_end(key)
        return client

    def _kind(self, request: web.Request) -> str | None:
        """The route's limit kind; "normal" for requests no route matched; None for foreign routes."""
        match = request.match_info
        if match.http_exception is not None:
            return "normal"
        resource = match.route.resource
        return self.kinds.get((request.method, resource.canonical if resource is not None else ""))

    def _admit(self, kind: str, client: Client) -> tuple[str, str, float] | None:
        """Why the request may not be served now (reason, message, seconds to wait), or None."""
        cfg = self.config
        now = self.clock()
        if wait := client.requests.take(now):
            return "rate", f"too many requests from this address (at most {cfg.requests_per_s}/s, " \
                           f"burst {cfg.request_burst})", wait
        if kind == "bulk" and (wait := client.answer_bytes.debt(now)):
            return "bytes", f"this address took too many answer bytes (at most {cfg.answer_bytes_per_s} bytes/s)", wait
        if kind == "tx" and (wait := client.txs.take(now)):
            return "tx_rate", f"too many transactions from this address (at most {cfg.txs_per_s}/s, " \
                              f"burst {cfg.tx_burst})", wait
        if kind == "light":
            return None
        if client.inflight >= cfg.max_inflight_per_client:
            return "client_busy", f"too many requests from this address at once (at most " \
                                  f"{cfg.max_inflight_per_client})", 1
        if kind != "stream" and self.inflight >= cfg.max_inflight:
            return "node_busy", f"the node is serving too many requests (at most {cfg.max_inflight})", 1
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        kind = self._kind(request)
        if kind is None:
            return await handler(request)
        client = self.client(client_key(request.remote))
        refusal = self._admit(kind, client)
        if refusal is not None:
            reason, message, wait = refusal
            self.stats.refused[reason] += 1
            resp = error_response(429, message, {"Retry-After": str(max(1, math.ceil(wait)))})
            # over a concurrency cap the client already holds enough connections: close this one
            return await answer_and_close(request, resp) if reason.endswith("busy") else resp
        if kind == "light":
            return await handler(request)
        counts_total = kind != "stream"
        # a bulk answer pre-pays the most it can be, so a client that does not read its answers
        # cannot have more of them in flight than its byte budget covers; the rest is refunded
        reserved = min(self.config.max_response_bytes, self.config.answer_bytes_per_s) if kind == "bulk" else 0
        client.answer_bytes.charge(reserved, self.clock())
        client.inflight += 1
        self.inflight += counts_total
        sent = 0
        try:
            resp = await handler(request)
            if not resp.prepared:
                await self._send(request, resp)
            sent = resp.body_length
            return resp
        finally:
            client.answer_bytes.charge(sent - reserved, self.clock())
            client.inflight -= 1
            self.inflight -= counts_total

    async def _send(self, request: web.Request, resp: web.StreamResponse) -> None:
        """Send the whole answer while the request still holds its slots; cut a client that does
        not take it in time (aiohttp then finds the answer sent or the connection gone)."""
        try:
            async with asyncio.timeout(self.config.request_timeout_ms / 1000):
                await resp.prepare(request)
                await resp.write_eof()
        except TimeoutError:
            self.stats.cut += 1
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            pass  # the client went away: no answer to give, nothing to log (aiohttp closes up)
