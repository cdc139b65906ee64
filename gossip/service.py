"""``Gossip``: the node-facing service. Connections, dialling, peer exchange, lifecycle.

One port per node: :meth:`Gossip.attach` adds ``GET /p2p`` to the node's aiohttp application;
peers are addressed by base URL and dialled at ``URL + "/p2p"``. What happens to frames on a live
connection is :mod:`gossip.router`'s business; this module admits connections (handshake caps
and address budgets, :mod:`gossip.admission`), runs the handshake (:mod:`gossip.session`), keeps
the peer table consistent (one connection per node id, separate inbound and outbound slots),
dials from the address book within the dial policy, and takes connections down. Telling peers
whom we know is :mod:`gossip.pex`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from gossip.admission import Admission
from gossip.book import AddressBook
from gossip.clock import Clock, SystemClock, system_rng
from gossip.config import GossipConfig
from gossip.crypto import KeyPair
from gossip.limits import ByteBudget
from gossip.mesh import make_policy
from gossip.metrics import GossipMetrics, MetricsRecorder
from gossip.netpolicy import address_group
from gossip.peer import Peer, PeerInfo
from gossip.pex import PeerExchange
from gossip.policy import DisseminationPolicy
from gossip.pull import PullRule
from gossip.router import Deliver, Router, Validator
from gossip.session import HandshakeError, Identity, WebSocketLike, handshake
from gossip.transport import Transport, WebSocketTransport
from gossip.wire import WS_MAX_MESSAGE, Close

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
                 policy: DisseminationPolicy | None = None, *, transport: Transport | None = None,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        """``transport``, ``clock`` and ``rng`` default to the real network, clocks and entropy;
        the network simulation passes its own (see :mod:`gossip.clock`)."""
        self.keypair = keypair
        self.config = config
        self.node_id = keypair.node_id
        self._clock = clock or SystemClock()
        self._rng = rng or system_rng()
        self._me = Identity(keypair, config.chain_id, config.listen_url, self._rng.randbytes(32))
        self._peers: dict[str, Peer] = {}
        self.buffers = ByteBudget(config.buffer_bytes)
        """What every peer's send queue and inbox hold together (bounded by ``buffer_bytes``)."""
        self._policy = policy or make_policy(config, self._rng, self._clock.monotonic)
        self._book = AddressBook(
            config.listen_url, new_buckets=config.book_new_buckets,
            tried_buckets=config.book_tried_buckets, bucket_size=config.book_bucket_size,
            backoff_base=config.backoff_base, backoff_max=config.backoff_max,
            max_failures=config.max_dial_failures, scope=config.dial_scope,
            clock=self._clock.monotonic, rng=self._rng, secret=self._rng.randbytes(32))
        for url in config.bootstrap:
            self._book.add_fixed(url)
        self._admission = Admission(config.max_handshakes, config.max_handshakes_per_ip,
                                    config.handshake_rate, config.handshake_burst,
                                    config.address_costs, self._clock.monotonic)
        self._metrics = MetricsRecorder()
        self._router = Router(keypair, config, self._peers, self._policy, self._book,
                              self._admission, self._metrics, self._wake_maintenance, self._clock)
        self._pex = PeerExchange(config, self._peers, self._book, self._clock)
        self._transport = transport or WebSocketTransport()
        self._sockets: set[WebSocketLike] = set()
        self._dials: set[asyncio.Task] = set()
        self._inbound: set[asyncio.Task] = set()
        """aiohttp's handler tasks serving ``/p2p`` (not ours to cancel, but to wait for)."""
        self._maintenance: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._running = False
        self._stopped = False

    # ------------------------------------------------------------------ public API

    def attach(self, app: web.Application) -> None:
        """Serve ``GET /p2p`` on the node's application and stop with it."""
        app.router.add_get("/p2p", self._handle_inbound)
        app.on_shutdown.append(self._on_app_shutdown)

    def subscribe(self, topic: str, validate: Validator, deliver: Deliver,
                  pull: PullRule | None = None) -> None:
        """Accept ``topic``: ``validate`` decides each envelope, ``deliver`` receives accepted
        ones. One subscriber per topic; messages on topics without one are dropped. With
        ``pull``, large bodies on the topic are announced and pulled by id (:mod:`gossip.pull`)."""
        self._router.subscribe(topic, validate, deliver, pull)

    async def start(self) -> None:
        """Start dialling (bootstrap first) and the maintenance heartbeat."""
        if self._running or self._stopped:
            raise RuntimeError("Gossip can be started once")
        self._running = True
        await self._transport.start(self.config)
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
        self._router.pulls.close()
        await self._transport.close()

    async def publish(self, topic: str, body: bytes) -> bytes:
        """Sign ``body`` and send it on ``topic``; returns the message id. Not delivered to
        ourselves: the layer above handles its own messages directly."""
        return self._router.publish(topic, body)

    @property
    def policy(self) -> DisseminationPolicy:
        """The dissemination policy (its meshes and scores are read by tests and benchmarks)."""
        return self._policy

    def peers(self) -> list[PeerInfo]:
        scores = self._router.scores
        return [PeerInfo(p.node_id, p.url, p.direction, scores.score(p.node_id), p.connected_since,
                         self._policy.score(p.node_id)) for p in self._peers.values()]

    def metrics(self) -> GossipMetrics:
        seen = self._router.seen
        return self._metrics.snapshot(peers_connected=len(self._peers),
                                      peers_banned=len(self._router.scores.banned()),
                                      seen_entries=len(seen), seen_evictions=seen.evictions)

    def score(self, node_id: str) -> float:
        """Current score of ``node_id``, connected or not (0 for one never penalised)."""
        return self._router.scores.score(node_id)

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

    def admit_inbound(self, ip: str) -> str | None:
        """May a connection from ``ip`` start a handshake? None, or why not (``stopped``,
        ``busy``, ``throttled``). Every None must be followed by :meth:`serve_inbound`."""
        if not self._running:
            return "stopped"
        refusal = self._admission.begin(ip)
        if refusal is not None:
            self._metrics.handshake_failures[refusal] += 1
        return refusal

    async def serve_inbound(self, ws: WebSocketLike, ip: str) -> None:
        """Run a connection :meth:`admit_inbound` admitted, until it ends."""
        ended = False

        def handshake_over() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self._admission.end(ip)

        task = asyncio.current_task()
        assert task is not None
        self._inbound.add(task)
        try:
            await self._serve(ws, "in", None, ip, handshake_over)
        finally:
            handshake_over()
            self._inbound.discard(task)

    async def _handle_inbound(self, request: web.Request) -> web.StreamResponse:
        """Admit (before the upgrade, so a refusal is a small HTTP answer), then serve."""
        ip = request.remote or ""
        refusal = self.admit_inbound(ip)
        if refusal == "stopped":
            raise web.HTTPServiceUnavailable(text="gossip is not running")
        if refusal == "busy":
            raise web.HTTPServiceUnavailable(text="busy: too many handshakes in progress")
        if refusal is not None:
            raise web.HTTPTooManyRequests(text="throttled: this address's handshake budget is spent")
        ws = web.WebSocketResponse(heartbeat=self.config.ping_interval,
                                   max_msg_size=WS_MAX_MESSAGE, timeout=self.config.close_timeout)
        try:
            await ws.prepare(request)
        except BaseException:
            self._admission.end(ip)
            raise
        await self.serve_inbound(ws, ip)
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
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                ws, ip = await self._transport.dial(url)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("dialling %s failed: %s", url, exc)
            return _Outcome("unreachable")
        try:
            return await self._serve(ws, "out", url, ip, lambda: None)
        finally:
            await ws.close()

    async def _serve(self, ws: WebSocketLike, direction: str, url: str | None, ip: str,
                     handshake_over: Callable[[], None]) -> _Outcome:
        """Handshake, register and run one connection; returns how it went."""
        self._sockets.add(ws)
        try:
            try:
                hello, channel = await handshake(
                    ws, self._me, initiator=direction == "out", max_frame=self.config.max_message,
                    timeout=self.config.handshake_timeout, is_banned=self._router.scores.is_banned,
                    ephemeral=self._rng.randbytes(32))
            except HandshakeError as exc:
                if direction == "in" and exc.reason not in _BENIGN_REFUSALS:
                    self._admission.charge(ip, "handshake")
                await self._refuse(ws, exc, direction, url)
                return _Outcome(exc.reason)
            finally:
                handshake_over()
            peer = Peer(ws, hello, channel, direction, url or hello.listen_url, ip, self.config,
                        self._router, self._clock, self.buffers)
            try:
                self._register(peer)
            except HandshakeError as exc:
                await self._refuse(ws, exc, direction, url)
                return _Outcome(exc.reason, peer.node_id)
            try:
                if self._pex.introduce(peer):
                    self._wake_maintenance()
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
        else:
            limit = self.config.max_inbound if peer.direction == "in" else self.config.max_outbound
            if self._count(peer.direction) >= limit:
                raise HandshakeError("too_many_peers", Close.TOO_MANY_PEERS,
                                     f"all {limit} {peer.direction}bound slots are taken")
        self._peers[peer.node_id] = peer
        self._router.add_peer(peer)
        if peer.url:
            if peer.direction == "out":
                self._book.connected(peer.url, peer.node_id)
            else:
                self._book.learn(peer.url, address_group(peer.ip), peer.node_id)
        log.info("peer %s connected (%s, %s)", peer.node_id[:16], peer.direction, peer.url)

    def _unregister(self, peer: Peer) -> None:
        if self._peers.get(peer.node_id) is not peer:
            return  # superseded by a newer connection to the same node
        del self._peers[peer.node_id]
        self._router.remove_peer(peer.node_id)
        if peer.url:
            self._book.lost(peer.url)
        log.info("peer %s disconnected", peer.node_id[:16])
        self._wake_maintenance()

    def _count(self, direction: str) -> int:
        return sum(1 for p in self._peers.values() if p.direction == direction)

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
                self._router.pulls.bodies.purge()
                self._router.scores.prune()
                self._pex.flush()
            except Exception:
                log.exception("gossip maintenance round failed")
            try:
                async with asyncio.timeout(self.config.heartbeat):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _dial_due(self) -> None:
        free = self.config.max_outbound - self._count("out") - self._book.dialing_count()
        if free <= 0:
            return
        connected = set(self._peers) | {p.url for p in self._peers.values()}
        for entry in self._book.due(connected)[:free]:
            self._book.dialing(entry.url)
            task = asyncio.create_task(self._dial(entry.url), name=f"gossip-dial {entry.url}")
            self._dials.add(task)
            task.add_done_callback(self._dials.discard)
