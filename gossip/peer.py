"""One authenticated connection to a peer: its reader, writer and validation worker.

Three tasks per connection, so that nothing one peer does can stall another or the publisher:
the reader always keeps reading (answering pings, enforcing rate limits) even while a slow topic
validator runs; the worker runs validators one at a time for this peer; the writer drains a
bounded send queue, so a peer that reads slowly only ever fills (and overflows) its own queue.

Every frame travels sealed in the session's :class:`~gossip.session.SecureChannel`. A WebSocket
message that does not authenticate (or anything but a binary message) cannot be the peer's: the
session ends at once (close 4010) and the peer's score is left alone, while the source address
pays (see :mod:`gossip.admission`). Only what authenticated is ever charged to the node id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from gossip.clock import Clock
from gossip.codec import DecodeError
from gossip.config import GossipConfig
from gossip.limits import BoundedQueue, ByteBudget, RateLimiter, TokenBucket
from gossip.session import OversizedFrame, SecureChannel, SessionError, WebSocketLike
from gossip.wire import Close, Hello

log = logging.getLogger(__name__)

_CLOSED_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


@dataclass(frozen=True)
class PeerInfo:
    """A connected peer, as ``Gossip.peers()`` reports it (e.g. for ``/net_info``)."""

    node_id: str
    url: str
    direction: str
    """"in" (it dialled us) or "out" (we dialled it)."""
    score: float
    connected_since: float
    """Unix time the handshake completed."""
    mesh_score: float = 0.0
    """The dissemination policy's score of the peer (gossipsub v1.1; 0 under flooding)."""


class PeerHooks(Protocol):
    """What a connection reports to, and asks of, the gossip service."""

    def on_frame(self, peer: Peer, data: bytes) -> None:
        """A binary frame that passed the rate limits (synchronous: decode, check, enqueue)."""

    async def on_work(self, peer: Peer, work: Any) -> None:
        """Process one item the service queued with :meth:`Peer.submit`."""

    def on_abandon(self, peer: Peer, work: Any) -> None:
        """A queued item that will never be processed (the connection ended first)."""

    def on_drop(self, peer: Peer, reason: str) -> None:
        """Something from or for this peer was dropped for ``reason``."""

    def on_session_failure(self, peer: Peer, detail: str) -> None:
        """Something that did not authenticate arrived on the connection; it is being closed."""

    def on_sent(self, topic: str | None, nbytes: int) -> None:
        """A frame was written; ``topic`` is None for control frames."""


class Peer:
    """A live, authenticated connection. Created by the service after the handshake."""

    def __init__(self, ws: WebSocketLike, hello: Hello, channel: SecureChannel, direction: str,
                 url: str, ip: str, config: GossipConfig, hooks: PeerHooks, clock: Clock,
                 budget: ByteBudget | None = None) -> None:
        self.ws = ws
        self.node_id = hello.node_id
        self.url = url
        """The peer's base URL: the one we dialled, or the one it advertised."""
        self.ip = ip
        """The address the connection comes from (or goes to), as the transport reports it."""
        self.direction = direction
        self.connected_since = clock.wall_ms() / 1000
        self._channel = channel
        self._hooks = hooks
        self._limiter = RateLimiter(config.msg_rate, config.msg_burst, config.byte_rate,
                                    config.byte_burst, clock.monotonic)
        self.pex_limiter = TokenBucket(2.0 / config.pex_min_interval, 4.0, clock.monotonic)
        """Peer-exchange frames this peer may send us (twice the rate we send at, burst 4)."""
        self.pex_pending: dict[str, None] = {}
        """URLs to announce to this peer at its next peer-exchange turn (insertion-ordered)."""
        self.pex_sent_at = float("-inf")
        self._outbox: BoundedQueue[tuple[str | None, bytes]] = BoundedQueue(
            config.send_queue, config.send_queue_drop, config.send_queue_bytes,
            lambda item: len(item[1]), budget)
        self._inbox: BoundedQueue[Any] = BoundedQueue(
            config.inbox_size, "newest", config.inbox_bytes, lambda work: work.size, budget)
        self._current: Any = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._close_code: int | None = None
        self._close_message = b""
        self._closer: asyncio.Task | None = None
        self._drain_timeout = config.close_timeout

    @property
    def buffered(self) -> int:
        """Bytes this peer's send queue and inbox hold."""
        return self._outbox.nbytes + self._inbox.nbytes

    @property
    def closing(self) -> bool:
        return self._close_code is not None or self.ws.closed

    def send(self, frame: bytes, topic: str | None = None) -> bool:
        """Queue ``frame`` for this peer without waiting; False if it was not queued.

        A full queue drops per ``send_queue_drop`` and counts ``queue_full``.
        """
        if self.closing:
            return False
        queued, dropped = self._outbox.put((topic, frame))
        for _ in range(dropped):
            self._hooks.on_drop(self, "queue_full")
        return queued

    def submit(self, work: Any) -> bool:
        """Queue ``work`` for the validation worker; False (nothing queued) when it is full."""
        queued, _ = self._inbox.put(work)
        if queued:
            self._idle.clear()
        return queued

    def request_close(self, code: int, reason: str) -> None:
        """Close the connection soon, from any context; the first reason given wins."""
        if self._close_code is not None:
            return
        self._close_code = code
        self._close_message = reason.encode()[:123]
        if not self.ws.closed:
            self._closer = asyncio.create_task(
                self.ws.close(code=code, message=self._close_message), name=f"close-{self.node_id[:8]}")

    async def run(self) -> None:
        """Serve the connection until either side closes it; always cleans up its tasks."""
        writer = asyncio.create_task(self._write_loop(), name=f"write-{self.node_id[:8]}")
        worker = asyncio.create_task(self._work_loop(), name=f"work-{self.node_id[:8]}")
        try:
            await self._read_loop()
        finally:
            writer.cancel()
            await self._finish_worker(worker)
            await asyncio.gather(writer, return_exceptions=True)
            self._outbox.take_all()  # unsent frames give their bytes back to the node's budget
            await self._close_socket()

    async def _read_loop(self) -> None:
        while not self.closing:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                try:
                    frame = self._channel.open(msg.data)
                except SessionError as exc:
                    return self._fail_session(str(exc))
                except OversizedFrame:
                    self._hooks.on_drop(self, "oversized")
                    self.request_close(Close.TOO_BIG, "frame larger than max_message")
                    return
                except DecodeError:
                    self._hooks.on_drop(self, "malformed")
                    continue
                if frame is None:
                    continue
                if self._limiter.admit(len(frame)):
                    self._dispatch(frame)
                else:
                    self._hooks.on_drop(self, "rate_limited")
            elif msg.type in _CLOSED_TYPES:
                return
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return self._fail_session(f"transport error: {msg.data}")
            else:  # text: nothing outside the sealed channel is the peer's
                return self._fail_session(f"unsealed {msg.type.name} message")

    def _fail_session(self, detail: str) -> None:
        log.info("session with %s ends: %s", self.node_id[:16], detail)
        self._hooks.on_session_failure(self, detail)
        self.request_close(Close.BAD_FRAME, "bad_frame: a message failed authentication")

    def _dispatch(self, data: bytes) -> None:
        try:
            self._hooks.on_frame(self, data)
        except Exception:  # a bug in handling one frame must not end the connection
            log.exception("handling a frame from %s failed", self.node_id[:16])
            self._hooks.on_drop(self, "malformed")

    async def _write_loop(self) -> None:
        try:
            while True:
                topic, frame = await self._outbox.get()
                for sealed in self._channel.seal(frame):
                    await self.ws.send_bytes(sealed)
                self._hooks.on_sent(topic, len(frame))
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            log.debug("write to %s failed: %s", self.node_id[:16], exc)
            self.request_close(aiohttp.WSCloseCode.ABNORMAL_CLOSURE, "write failed")

    async def _work_loop(self) -> None:
        while True:
            self._current = await self._inbox.get()
            try:
                await self._hooks.on_work(self, self._current)
            except Exception:  # the service guards its callbacks; this is the last line
                log.exception("processing a message from %s failed", self.node_id[:16])
            self._current = None
            if not len(self._inbox):
                self._idle.set()

    async def _finish_worker(self, worker: asyncio.Task) -> None:
        """Let queued messages finish when the peer went away by itself (they are valid and
        already marked seen, so no other copy of them would be accepted); when we are the ones
        closing (misbehaviour, duplicate link, shutdown) stop at once. Whatever is left
        unprocessed is handed back through ``on_abandon``."""
        if self._close_code is None:
            try:
                async with asyncio.timeout(self._drain_timeout):
                    await self._idle.wait()
            except TimeoutError:
                pass
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        leftovers = ([self._current] if self._current is not None else []) + self._inbox.take_all()
        self._current = None
        for work in leftovers:
            self._hooks.on_abandon(self, work)

    async def _close_socket(self) -> None:
        if self._closer is not None:
            await asyncio.gather(self._closer, return_exceptions=True)
        elif not self.ws.closed:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                await self.ws.close(code=aiohttp.WSCloseCode.OK)
