"""``Gossip``: the node-facing service. Connections, dialling, peer exchange, lifecycle.

One port per node: :meth:`Gossip.attach` adds ``GET /p2p`` to the node's aiohttp application;
peers are addressed by base URL and dialled at ``URL + "/p2p"``. What happens to frames on a live
connection is :mod:`gossip.router`'s business; this module gets connections up, keeps the peer
table consistent (one connection per node id, at most ``max_peers``), and takes them down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from gossip.book import AddressBook
from gossip.config import GossipConfig
from gossip.crypto import KeyPair
from gossip.handshake import HandshakeError, Identity, WebSocketLike, handshake
from gossip.metrics import GossipMetrics, MetricsRecorder
from gossip.peer import Peer, PeerInfo
from gossip.policy import DisseminationPolicy, FloodPolicy
from gossip.router import Deliver, Router, Validator
from gossip.wire import Close, peers_frame

log = logging.getLogger(__name__)

_BENIGN_REFUSALS = frozenset({"self", "duplicate", "too_many_peers", "refused", "closed"})
"""Refused connections that are nobody's misbehaviour: not counted as dropped handshakes."""


@dataclass(frozen=True)
class _Outcome:
    status: str
    """"connected" (and since ended) or the refusal reason."""
    node_id: str | None = None


class Gossip:
    """Disseminates signed envelopes on topics among authenticated peers (see architecture.md)."""

    def __init__(self, keypair: KeyPair, config: GossipConfig,
                 policy: DisseminationPolicy | None = None) -> None:
        self.keypair = keypair
        self.config = config
        self.node_id = keypair.node_id
        self._me = Identity(keypair, config.chain_id, config.listen_url)
        self._peers: dict[str, Peer] = {}
        self._policy = policy or FloodPolicy()
        self._book = AddressBook(config.listen_url, config.book_max, config.backoff_base,
                                 config.backoff_max, config.max_dial_failures)
        for url in config.bootstrap:
            self._book.add(url, keep=True)
        self._metrics = MetricsRecorder()
        self._router = Router(keypair, config, self._peers, self._policy, self._book,
                              self._metrics, self._wake_maintenance)
        self._session: aiohttp.ClientSession | None = None
        self._sockets: set[WebSocketLike] = set()
        self._dials: set[asyncio.Task] = set()
        self._inbound: set[asyncio.Task] = set()
        """aiohttp's handler tasks serving ``/p2p`` (not ours to cancel, but to wait for)."""
        self._maintenance: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._running = False
        self._stopped = False
        self._last_pex = 0.0

    # ------------------------------------------------------------------ public API

    def attach(self, app: web.Application) -> None:
        """Serve ``GET /p2p`` on the node's application and stop with it."""
        app.router.add_get("/p2p", self._handle_inbound)
        app.on_shutdown.append(self._on_app_shutdown)

    def subscribe(self, topic: str, validate: Validator, deliver: Deliver) -> None:
        """Accept ``topic``: ``validate`` decides each envelope, ``deliver`` receives accepted
        ones. One subscriber per topic; messages on topics without one are dropped."""
        self._router.subscribe(topic, validate, deliver)

    async def start(self) -> None:
        """Start dialling (bootstrap first) and the maintenance heartbeat."""
        if self._running or self._stopped:
            raise RuntimeError("Gossip can be started once")
        self._running = True
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.dial_timeout))
        self._maintenance = asyncio.create_task(self._maintain(), name="gossip-maintenance")

    async def stop(self) -> None:
        """Close every connection and task; idempotent, and safe if never started."""
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
        for peer in list(self._peers.values()):
            peer.request_close(Close.SHUTDOWN, "shutdown")
        handshaking = [ws for ws in self._sockets if not any(p.ws is ws for p in self._peers.values())]
        await asyncio.gather(*(ws.close(code=Close.SHUTDOWN, message=b"shutdown") for ws in handshaking),
                             return_exceptions=True)
        serving = self._dials | self._inbound
        if serving:
            _, pending = await asyncio.wait(serving, timeout=2 * self.config.close_timeout + 1)
            stuck = [t for t in pending if t in self._dials]
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def publish(self, topic: str, body: bytes) -> bytes:
        """Sign ``body`` and send it on ``topic``; returns the message id. Not delivered to
        ourselves: the layer above handles its own messages directly."""
        return self._router.publish(topic, body)

    def peers(self) -> list[PeerInfo]:
        scores = self._router.scores
        return [PeerInfo(p.node_id, p.url, p.direction, scores.score(p.node_id), p.connected_since)
                for p in self._peers.values()]

    def metrics(self) -> GossipMetrics:
        seen = self._router.seen
        return self._metrics.snapshot(peers_connected=len(self._peers),
                                      peers_banned=len(self._router.scores.banned()),
                                      seen_entries=len(seen), seen_evictions=seen.evictions)

    def banned(self) -> dict[str, float]:
        """Node ids banned for misbehaviour, with the seconds left on each ban."""
        return self._router.scores.banned()

    def known_urls(self) -> list[str]:
        """Peer URLs in the address book (bootstrap, advertised and exchanged)."""
        return self._book.urls()

    def ban(self, node_id: str, seconds: float | None = None) -> None:
        """Ban ``node_id`` (e.g. on evidence from the layer above) and drop its connection."""
        self._router.scores.ban(node_id, seconds)
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.request_close(Close.BANNED, "banned")

    # ------------------------------------------------------------------ connections

    async def _handle_inbound(self, request: web.Request) -> web.StreamResponse:
        if not self._running:
            raise web.HTTPServiceUnavailable(text="gossip is not running")
        ws = web.WebSocketResponse(heartbeat=self.config.ping_interval,
                                   max_msg_size=self.config.frame_limit,
                                   timeout=self.config.close_timeout)
        await ws.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self._inbound.add(task)
        try:
            await self._serve(ws, "in", None)
        finally:
            self._inbound.discard(task)
        return ws

    async def _on_app_shutdown(self, app: web.Application) -> None:
        await self.stop()

    async def _dial(self, url: str) -> None:
        try:
            outcome = await self._connect(url)
        except Exception:  # a bug here must not leave a task with an unretrieved exception
            log.exception("dialling %s failed unexpectedly", url)
            outcome = _Outcome("error")
        if outcome.status == "self":
            self._book.mark_self(url)
        elif outcome.status == "duplicate" and outcome.node_id is not None:
            self._book.connected(url, outcome.node_id)
        elif outcome.status != "connected":
            self._book.failed(url)
        self._wake_maintenance()

    async def _connect(self, url: str) -> _Outcome:
        assert self._session is not None
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                ws = await self._session.ws_connect(
                    url + "/p2p", heartbeat=self.config.ping_interval,
                    max_msg_size=self.config.frame_limit,
                    timeout=aiohttp.ClientWSTimeout(ws_close=self.config.close_timeout))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("dialling %s failed: %s", url, exc)
            return _Outcome("unreachable")
        try:
            return await self._serve(ws, "out", url)
        finally:
            await ws.close()

    async def _serve(self, ws: WebSocketLike, direction: str, url: str | None) -> _Outcome:
        """Handshake, register and run one connection; returns how it went."""
        self._sockets.add(ws)
        try:
            try:
                hello = await handshake(ws, self._me, max_message=self.config.max_message,
                                        timeout=self.config.handshake_timeout,
                                        is_banned=self._router.scores.is_banned)
            except HandshakeError as exc:
                await self._refuse(ws, exc, direction, url)
                return _Outcome(exc.reason)
            peer = Peer(ws, hello, direction, url or hello.listen_url, self.config, self._router)
            try:
                self._register(peer)
            except HandshakeError as exc:
                await self._refuse(ws, exc, direction, url)
                return _Outcome(exc.reason, peer.node_id)
            try:
                self._exchange_peers(peer)
                await peer.run()
            finally:
                self._unregister(peer)
            return _Outcome("connected", peer.node_id)
        finally:
            self._sockets.discard(ws)

    async def _refuse(self, ws: WebSocketLike, exc: HandshakeError, direction: str,
                      url: str | None) -> None:
        if not self._stopped:
            self._metrics.handshake_failures[exc.reason] += 1
            if exc.reason not in _BENIGN_REFUSALS:
                self._metrics.drop("wrong_chain" if exc.reason == "wrong_chain" else "handshake")
            log.info("%s connection %s refused: %s", direction, url or "", exc)
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
            await ws.close(code=exc.code, message=exc.close_message)

    def _register(self, peer: Peer) -> None:
        """Admit a peer that passed the handshake, or raise HandshakeError.

        Two nodes dialling each other at once end up with two connections; both sides keep the
        one dialled by the smaller node id, so they agree on which to close without talking.
        """
        if self._stopped:
            raise HandshakeError("closed", Close.SHUTDOWN, "shutting down")
        existing = self._peers.get(peer.node_id)
        if existing is not None:
            preferred = min(self.node_id, peer.node_id)
            if self._dialer(existing) == preferred or self._dialer(peer) != preferred:
                raise HandshakeError("duplicate", Close.DUPLICATE, "already connected to this node")
            existing.request_close(Close.DUPLICATE, "duplicate: superseded by another connection")
            self._metrics.handshake_failures["duplicate"] += 1
        elif len(self._peers) >= self.config.max_peers:
            raise HandshakeError("too_many_peers", Close.TOO_MANY_PEERS,
                                 f"at the limit of {self.config.max_peers} peers")
        self._peers[peer.node_id] = peer
        self._policy.add_peer(peer.node_id)
        if peer.url:
            if peer.direction == "out":
                self._book.connected(peer.url, peer.node_id)
            else:
                self._book.add(peer.url, peer.node_id)
        log.info("peer %s connected (%s, %s)", peer.node_id[:16], peer.direction, peer.url)

    def _unregister(self, peer: Peer) -> None:
        if self._peers.get(peer.node_id) is not peer:
            return  # superseded by a newer connection to the same node
        del self._peers[peer.node_id]
        self._policy.remove_peer(peer.node_id)
        if peer.url:
            self._book.lost(peer.url)
        log.info("peer %s disconnected", peer.node_id[:16])
        self._wake_maintenance()

    def _exchange_peers(self, peer: Peer) -> None:
        """Tell a new peer whom we know, and tell the others about the new peer, so that a node
        joining through one bootstrap URL finds the rest without waiting for the periodic round."""
        peer.send(peers_frame(self._pex_urls(peer.url)))
        if peer.url:
            announce = peers_frame([peer.url])
            for other in self._peers.values():
                if other is not peer and other.url != peer.url:
                    other.send(announce)

    def _dialer(self, peer: Peer) -> str:
        return self.node_id if peer.direction == "out" else peer.node_id

    # ------------------------------------------------------------------ maintenance

    def _wake_maintenance(self) -> None:
        self._wake.set()

    async def _maintain(self) -> None:
        """Every heartbeat (or sooner when woken): dial, run policy upkeep, expire caches,
        exchange peers. A failing round is logged and the next one runs regardless."""
        while True:
            self._wake.clear()
            try:
                self._dial_due()
                self._policy.heartbeat()
                self._router.seen.purge()
                self._router.scores.prune()
                if time.monotonic() - self._last_pex >= self.config.pex_interval:
                    self._last_pex = time.monotonic()
                    for peer in list(self._peers.values()):
                        peer.send(peers_frame(self._pex_urls(peer.url)))
            except Exception:
                log.exception("gossip maintenance round failed")
            try:
                async with asyncio.timeout(self.config.heartbeat):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _dial_due(self) -> None:
        free = self.config.max_peers - len(self._peers) - self._book.dialing_count()
        if free <= 0:
            return
        connected = set(self._peers) | {p.url for p in self._peers.values()}
        for entry in self._book.due(connected)[:free]:
            self._book.dialing(entry.url)
            task = asyncio.create_task(self._dial(entry.url), name=f"gossip-dial {entry.url}")
            self._dials.add(task)
            task.add_done_callback(self._dials.discard)

    def _pex_urls(self, exclude: str) -> list[str]:
        """URLs to tell a peer about: connected peers first, then the rest of the book."""
        urls = dict.fromkeys([p.url for p in self._peers.values()] + self._book.urls())
        urls.pop(exclude, None)
        urls.pop("", None)
        return list(urls)[: self.config.pex_max]
