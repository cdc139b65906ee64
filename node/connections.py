"""TCP connections of the node's HTTP server: how many, from whom, and how long they may idle.

aiohttp bounds what a request may cost once its head has arrived, but not the connection before
that: a client that opens a connection and sends its request head a byte at a time (slowloris),
or nothing at all, held a socket of the node for as long as it liked, and enough of them exhaust
the node's file descriptors (its database and its peers need them too). So, below aiohttp:

* a connection must complete a request head within ``api.head_timeout_ms`` of being opened, and
  of the end of its previous request (an idle keep-alive connection is closed as well);
* one client address (see :func:`node.api_limits.client_key`) holds at most
  ``api.max_connections_per_client`` connections, and all clients ``api.max_connections``;
* when all are taken, a newcomer from an address that holds fewer idle connections than the
  address holding the most idle ones takes the place of that address's longest idle connection
  (the way Bitcoin Core evicts inbound peers); failing that, it takes the place of the longest
  idle connection of any address if that one has been idle for more than a tenth of the head
  deadline; otherwise it is refused. Idle connections are what a flood holds; counting all of
  them made an honest address whose connections carry sessions (a site's peers) the "most
  crowded", and its one idle connection, a request about to be sent, was evicted. The second rule matters when many addresses flood: evicting each other, they
  settle at equal shares, and an honest address already holding as many (a site's peers behind
  one address) would find no address more crowded than its own and be locked out until the
  deadline. An honest client sends its request head at once, so what is idle that long is a
  slow head or a keep-alive connection its client can open again.

A refused or evicted connection is aborted (a reset: the node keeps no TIME_WAIT socket for it).
A request in progress (a gossip session over ``/p2p`` or a ``/subscribe`` stream included) is
never idle. The guard wraps aiohttp's protocol factory, so it sees connections before any byte
is parsed; a middleware tells it when requests start and end.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Awaitable, Callable

from aiohttp import web

from node.api_limits import client_key
from node.config_api import ApiConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Conn:
    """One accepted connection: the protocol asyncio talks to, forwarding to aiohttp's handler."""

    __slots__ = ("guard", "inner", "transport", "key", "busy", "idle_since")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.key = ""
        self.busy = 0  # requests in progress
        self.idle_since = 0.0

    # asyncio.Protocol, forwarded to aiohttp once admitted
    def connection_made(self, transport: Any) -> None:
        peer = transport.get_extra_info("peername")
        self.key = client_key(peer[0] if isinstance(peer, tuple) else None)
        self.transport = transport
        self.idle_since = self.guard.clock()
        if not self.guard.admit(self):
            self.transport = None
            transport.abort()
            return
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.transport is not None else None

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.guard.forget(self)
            self.transport = None
            self.inner.connection_lost(exc)


class ConnectionGuard:
    """Connection caps and the request-head deadline of one node's HTTP server (module docstring)."""

    def __init__(self, config: ApiConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.conns: dict[Any, _Conn] = {}  # by transport
        self.per_client: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()  # refused, evicted, head_timeout
        self._sweeper: asyncio.Task | None = None

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """aiohttp's protocol factory, each connection guarded."""
        return lambda: _Conn(self, factory())

    def admit(self, conn: _Conn) -> bool:
        cfg = self.config
        if self.per_client[conn.key] >= cfg.max_connections_per_client:
            self.stats["refused"] += 1
            return False
        if len(self.conns) >= cfg.max_connections and not self._evict_for(conn.key):
            self.stats["refused"] += 1
            return False
        self.conns[conn.transport] = conn
        self.per_client[conn.key] += 1
        return True

    def _evict_for(self, key: str) -> bool:
        """Make room for a newcomer from ``key`` (module docstring): the longest idle connection
        of the address holding the most idle ones, if it holds more than the newcomer's would;
        else the longest idle connection of all, if idle for a tenth of the head deadline."""
        idle = [c for c in self.conns.values() if not c.busy]
        if not idle:
            return False
        per_key = Counter(c.key for c in idle)
        crowded, held = per_key.most_common(1)[0]
        if held > per_key[key] + 1:
            victim = min((c for c in idle if c.key == crowded), key=lambda c: c.idle_since)
        else:
            victim = min(idle, key=lambda c: c.idle_since)
            if self.clock() - victim.idle_since <= self.config.head_timeout_ms / 10_000:
                return False
        self.stats["evicted"] += 1
        self._abort(victim)
        return True

    def _abort(self, conn: _Conn) -> None:
        transport = conn.transport
        self.forget(conn)
        if transport is not None:
            transport.abort()  # connection_lost follows and finds it forgotten

    def forget(self, conn: _Conn) -> None:
        if self.conns.pop(conn.transport, None) is not None:
            self.per_client[conn.key] -= 1
            if self.per_client[conn.key] <= 0:
                del self.per_client[conn.key]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outermost: a connection with a request in progress is busy, not idle. (The API's limiter
        sends each answer before returning, so "returned" means "answered".)"""
        conn = self.conns.get(request.transport)
        if conn is None:
            return await handler(request)
        conn.busy += 1
        try:
            return await handler(request)
        finally:
            conn.busy -= 1
            conn.idle_since = self.clock()

    def sweep(self) -> None:
        """Close every connection idle for longer than the head deadline."""
        deadline = self.clock() - self.config.head_timeout_ms / 1000
        for conn in [c for c in self.conns.values() if not c.busy and c.idle_since < deadline]:
            self.stats["head_timeout"] += 1
            self._abort(conn)

    async def run(self) -> None:
        """Sweep several times per deadline, so a connection overstays it by a fraction at most."""
        interval = min(1.0, self.config.head_timeout_ms / 4000)
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self.run(), name="http-connections")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)


class GuardedRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose sites accept connections through a guard."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    @property
    def server(self) -> Any:
        inner = super().server
        return None if inner is None else self.guard.wrap(inner)
