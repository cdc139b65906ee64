"""The simulated network: WebSocket connections with latency, bandwidth, loss and partitions.

Nodes talk through :class:`SimSocket` pairs that behave as the aiohttp WebSockets the gossip
layer uses (``send_bytes``, ``receive``, ``close``, ``closed``, ``close_code``), so the real
handshake, sessions, router and policy run on top. Each connection is two directed links, each
with its own latency (fixed per pair of nodes, drawn from the seed), bandwidth (a message leaves
after the ones queued before it, at ``bandwidth`` bytes per second) and loss. The connections
are TCP: a lost segment is not a lost message but a late one (``rto_s`` more per loss, and what
follows it on the link waits behind it), so loss shows up as head-of-line delay, as it does on
the real transport. A sender may queue at most ``sndbuf`` bytes ahead before ``send_bytes``
waits (TCP's send buffer).

A partition stalls every link that crosses it: messages wait, and are delivered once it heals,
unless it lasts ``dead_after_s`` (a WebSocket ping timeout), in which case both ends see the
connection drop and must dial again. Dials across a partition hang until the dialler's timeout;
dials to a node that is down are refused. A crashed node's connections drop at once for it and
one latency later for its peers.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

WSMessage = aiohttp.WSMessage
BINARY, CLOSE, CLOSED = aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED
ABNORMAL = 1006
_PACKET = 1448
_HEADERS = 40
_ORDER = 1e-6
"""Arrivals on one link are at least this far apart: timers due at the same instant may run in
any order, and a link must deliver in order (TCP; the session's nonces count on it)."""


@dataclass(frozen=True)
class LinkParams:
    latency_s: float = 0.050
    jitter_s: float = 0.020
    """Each pair of nodes has a latency drawn uniformly from ``latency_s +- jitter_s``."""
    bandwidth: float = 10e6 / 8
    """Bytes per second of each direction of each connection (10 Mbit/s)."""
    loss: float = 0.01
    """Probability that a message needs a retransmission (again, for each further loss)."""
    rto_s: float = 0.2
    """What one retransmission adds: Linux's minimum retransmission timeout."""
    sndbuf: int = 256 * 1024
    dead_after_s: float = 15.0
    """A connection stalled by a partition this long is dropped (the WebSocket ping timeout)."""


class Acceptor(Protocol):
    """What a listening node offers the network (a :class:`gossip.service.Gossip`)."""

    def admit_inbound(self, ip: str) -> str | None: ...

    async def serve_inbound(self, ws: Any, ip: str) -> None: ...


class _Link:
    """One direction of one connection."""

    def __init__(self, net: Network, src: str, dst: str, deliver: Callable[[WSMessage], None]) -> None:
        self._net = net
        self.src, self.dst = src, dst
        self._deliver = deliver
        self.latency = net.latency(src, dst)
        self._free_at = 0.0
        self._last_arrival = 0.0
        self.stalled: list[WSMessage] = []

    def enqueue(self, msg: WSMessage, size: int) -> float:
        """Put ``msg`` on the wire; returns how long the sender must wait for buffer room."""
        net, now = self._net, self._net.loop.time()
        wire = size + _HEADERS * (1 + size // _PACKET)
        self._free_at = max(now, self._free_at) + wire / net.params.bandwidth
        if net.reachable(self.src, self.dst):
            self._schedule(msg, self._free_at)
        else:
            self.stalled.append(msg)
        return self._free_at - now - net.params.sndbuf / net.params.bandwidth

    def _schedule(self, msg: WSMessage, departure: float) -> None:
        net = self._net
        arrival = departure + self.latency
        while net.rng.random() < net.params.loss:
            arrival += net.params.rto_s
        arrival = max(arrival, self._last_arrival + _ORDER)
        self._last_arrival = arrival
        net.loop.call_at(arrival, self._deliver, msg)

    def release(self) -> None:
        """The partition healed: what waited goes out now, in order."""
        held, self.stalled = self.stalled, []
        for msg in held:
            self._schedule(msg, self._net.loop.time())


class SimSocket:
    """One end of a simulated WebSocket connection."""

    def __init__(self, net: Network, local: str, remote: str) -> None:
        self._net = net
        self.local, self.remote = local, remote
        self.peer: SimSocket | None = None
        self.link: _Link | None = None
        self._inbox: deque[WSMessage] = deque()
        self._wake: asyncio.Future | None = None
        self._eof = False
        self.closed = False
        self.close_code: int | None = None

    async def send_bytes(self, data: bytes) -> None:
        if self.closed or self.link is None:
            raise ConnectionResetError("connection closed")
        wait = self.link.enqueue(WSMessage(BINARY, bytes(data), None), len(data))
        if wait > 0:
            await asyncio.sleep(wait)

    async def receive(self, timeout: float | None = None) -> WSMessage:
        while not self._inbox:
            if self._eof:
                return WSMessage(CLOSED, None, None)
            self._wake = self._net.loop.create_future()
            await self._wake
        msg = self._inbox.popleft()
        if msg.type is CLOSE:
            self._eof = self.closed = True  # aiohttp answers a close frame and is closed
        return msg

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        if self.closed:
            return False
        self.closed = True
        self.close_code = code
        if self.link is not None:
            self.link.enqueue(WSMessage(CLOSE, code, message.decode(errors="replace")), 4 + len(message))
        self._end()
        return True

    def _arrive(self, msg: WSMessage) -> None:
        if self._eof:
            return
        if msg.type is CLOSE and self.close_code is None:
            self.close_code = msg.data
        self._inbox.append(msg)
        self._poke()

    def abort(self) -> None:
        """The connection died under us (a crash, a stall past the ping timeout)."""
        if not self.closed:
            self.closed = True
            self.close_code = ABNORMAL
        self._end()

    def _end(self) -> None:
        self._eof = True
        self._net.forget(self)
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


class Network:
    def __init__(self, loop: asyncio.AbstractEventLoop, seed: int, params: LinkParams,
                 latencies: dict[tuple[str, ...], float] | None = None) -> None:
        """``latencies`` fixes the one-way latency of given pairs of addresses (sorted pairs)."""
        self.loop = loop
        self.params = params
        self.seed = seed
        self._fixed = dict(latencies or {})
        self.rng = random.Random(f"network:{seed}")
        self._listeners: dict[str, tuple[str, Acceptor]] = {}  # url -> (ip, acceptor)
        self._sockets: dict[int, SimSocket] = {}
        self._side: dict[str, int] = {}
        self._cut = 0
        """Partition generation: a stall is judged dead only within the partition that began it."""
        self.serving: dict[int, asyncio.Task] = {}

    def latency(self, a: str, b: str) -> float:
        """One-way latency between two addresses: fixed per pair, drawn from the seed."""
        first, second = sorted((a, b))
        if (first, second) in self._fixed:
            return self._fixed[(first, second)]
        digest = hashlib.sha256(f"{self.seed}:{first}:{second}".encode()).digest()
        unit = int.from_bytes(digest[:8], "big") / 2**64
        return self.params.latency_s + (2 * unit - 1) * self.params.jitter_s

    def reachable(self, a: str, b: str) -> bool:
        return self._side.get(a, 0) == self._side.get(b, 0)

    # ------------------------------------------------------------------ nodes

    def listen(self, url: str, ip: str, acceptor: Acceptor) -> None:
        self._listeners[url] = (ip, acceptor)

    def crash(self, url: str) -> None:
        """The node at ``url`` is gone: refused from now on, its connections dropped."""
        ip, _ = self._listeners.pop(url)
        for sock in [s for s in self._sockets.values() if s.local == ip]:
            sock.abort()
            peer = sock.peer
            if peer is not None:
                self.loop.call_later(self.latency(ip, peer.local), peer.abort)

    async def dial(self, src: str, url: str) -> tuple[SimSocket, str]:
        listener = self._listeners.get(url)
        if listener is None:
            await asyncio.sleep(2 * self.params.latency_s)
            raise ConnectionRefusedError(f"{url} is down")
        ip, acceptor = listener
        if not self.reachable(src, ip):
            await asyncio.sleep(3600.0)  # a SYN into a partition: the dialler's timeout ends it
        await asyncio.sleep(3 * self.latency(src, ip))  # TCP handshake and the HTTP upgrade
        if self._listeners.get(url) is not listener or not self.reachable(src, ip):
            raise ConnectionResetError(f"{url} went away while we connected")
        refusal = acceptor.admit_inbound(src)
        if refusal is not None:
            raise ConnectionRefusedError(f"{url} refused: {refusal}")
        client, server = SimSocket(self, src, ip), SimSocket(self, ip, src)
        for a, b in ((client, server), (server, client)):
            a.peer = b
            a.link = _Link(self, a.local, b.local, b._arrive)
            self._sockets[id(a)] = a
        task = self.loop.create_task(acceptor.serve_inbound(server, src))
        self.serving[id(task)] = task
        task.add_done_callback(lambda t: self.serving.pop(id(t), None))
        return client, ip

    def dialer(self, ip: str) -> Dialer:
        """The :class:`gossip.transport.Transport` of the node at ``ip``."""
        return Dialer(self, ip)

    def forget(self, sock: SimSocket) -> None:
        self._sockets.pop(id(sock), None)

    # ------------------------------------------------------------------ partitions

    def partition(self, groups: list[list[str]]) -> None:
        """Split the network: addresses in different groups cannot reach each other (addresses
        in no group stay with the first)."""
        self._cut += 1
        self._side = {ip: i for i, group in enumerate(groups) for ip in group}
        cut = self._cut
        self.loop.call_later(self.params.dead_after_s, self._drop_stalled, cut)

    def heal(self) -> None:
        self._side = {}
        self._cut += 1
        for sock in list(self._sockets.values()):
            if sock.link is not None:
                sock.link.release()

    def _drop_stalled(self, cut: int) -> None:
        if cut != self._cut:
            return
        for sock in [s for s in self._sockets.values() if s.peer is not None and not self.reachable(s.local, s.remote)]:
            sock.abort()


class Dialer:
    """:class:`gossip.transport.Transport` of one simulated node."""

    def __init__(self, net: Network, ip: str) -> None:
        self._net = net
        self._ip = ip

    async def start(self, config: Any) -> None:
        """Nothing to set up: the network is already there."""

    async def dial(self, url: str) -> tuple[SimSocket, str]:
        return await self._net.dial(self._ip, url)

    async def close(self) -> None:
        """Nothing to release."""
