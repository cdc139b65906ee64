"""An attacker's peer built on the project's own wire code, free to lie.

It authenticates exactly as a daemon does (``gossip.session.handshake``), so an attack test
exercises the same code paths a real adversary with a fresh key would reach, and then sends
whatever frames the test wants inside the authenticated session: well-formed envelopes from any
key, raw frame bytes, peer-exchange lists. Below the session it can put anything on the
WebSocket (``send_unsealed``), e.g. instead of a handshake message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp

from gossip.codec import unpack
from gossip.crypto import KeyPair
from gossip.envelope import Envelope
from gossip.session import Identity, SecureChannel, handshake
from gossip.wire import WS_MAX_MESSAGE, msg_frame, peers_frame

FRAME_LIMIT = 64 * 1024 * 1024


class HostilePeer:
    """One connection to a victim's ``/p2p`` endpoint; use as an async context manager."""

    def __init__(self, chain_id: str, keypair: KeyPair | None = None, listen_url: str = "") -> None:
        self.chain_id = chain_id
        self.keypair = keypair or KeyPair.generate()
        self.listen_url = listen_url
        self.session: aiohttp.ClientSession | None = None
        self.ws: Any = None
        self.channel: SecureChannel | None = None

    @property
    def node_id(self) -> str:
        return self.keypair.node_id

    async def __aenter__(self) -> "HostilePeer":
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def open(self, url: str) -> None:
        """A bare WebSocket to ``url``'s ``/p2p``, before any handshake."""
        assert self.session is not None, "use HostilePeer as an async context manager"
        self.ws = await self.session.ws_connect(url + "/p2p", max_msg_size=WS_MAX_MESSAGE)

    async def connect(self, url: str, timeout: float = 10.0) -> None:
        """Open and authenticate as ``keypair``, as a daemon would (as the initiator)."""
        await self.open(url)
        _, self.channel = await handshake(
            self.ws, Identity(self.keypair, self.chain_id, self.listen_url), initiator=True,
            max_frame=FRAME_LIMIT, timeout=timeout, is_banned=lambda _node_id: False)

    async def send_unsealed(self, data: bytes) -> None:
        """Put ``data`` on the WebSocket as it is (before or outside the session)."""
        await self.ws.send_bytes(data)

    async def send_raw(self, frame: bytes) -> None:
        """Send any frame bytes inside the authenticated session."""
        assert self.channel is not None, "connect() first"
        for sealed in self.channel.seal(frame):
            await self.ws.send_bytes(sealed)

    async def publish(self, topic: str, body: bytes, *, publisher: KeyPair | None = None,
                      seq: int | None = None) -> None:
        """A validly signed envelope on ``topic`` from ``publisher`` (default: this peer's key)."""
        kp = publisher or self.keypair
        seq = time.time_ns() // 1000 if seq is None else seq
        await self.send_raw(msg_frame(Envelope.create(kp, self.chain_id, topic, seq, body)))

    async def send_peers(self, urls: list[str]) -> None:
        await self.send_raw(peers_frame(urls))

    async def receive(self, timeout: float = 5.0) -> list | None:
        """The next frame from the victim, decoded; None when the victim closed the connection."""
        assert self.channel is not None, "connect() first"
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type is not aiohttp.WSMsgType.BINARY:
                return None
            frame = self.channel.open(msg.data)
            if frame is not None:
                return unpack(frame, FRAME_LIMIT)

    @property
    def closed(self) -> bool:
        return self.ws is None or self.ws.closed

    async def cut_off(self, timeout: float = 5.0) -> bool:
        """True once the victim has closed the connection; reads (so answers pings) for up to
        ``timeout`` seconds until it does. A victim's ban lands after our last frames were
        written, so a flood that merely finished sending has not yet been answered."""
        with contextlib.suppress(TimeoutError, ConnectionError, aiohttp.ClientError, RuntimeError):
            async with asyncio.timeout(timeout):
                while not self.closed and await self.receive(timeout=timeout) is not None:
                    pass
        return self.closed

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
            self.session = None
