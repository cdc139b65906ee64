"""Mutual authentication at the start of every connection.

Both sides send ``hello`` at once (no round trip is wasted on who speaks first), then each
signs the other's fresh nonce. A node thus proves it holds the key of the id it claims, a
recorded handshake cannot be replayed (the nonce is new each time), and a peer from another
chain fails twice over: its hello names the wrong chain, and its signature covers it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from gossip.codec import DecodeError
from gossip.crypto import KeyPair, verify
from gossip.wire import (
    NONCE_SIZE,
    PROTOCOL_VERSION,
    Close,
    Hello,
    auth_bytes,
    auth_frame,
    decode_frame,
    hello_frame,
    parse_auth,
    parse_hello,
)

_MAX_CLOSE_MESSAGE = 123  # RFC 6455: a close frame's reason fits in 123 bytes


class WebSocketLike(Protocol):
    """What both aiohttp's server and client WebSockets offer, and all gossip needs."""

    async def send_bytes(self, data: bytes) -> None: ...
    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage: ...
    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def close_code(self) -> int | None: ...


class HandshakeError(Exception):
    """A failed handshake; ``reason`` is the metrics key, ``code`` the close code to send."""

    def __init__(self, reason: str, code: int, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.code = code
        self.detail = detail

    @property
    def close_message(self) -> bytes:
        return str(self).encode()[:_MAX_CLOSE_MESSAGE]


@dataclass(frozen=True)
class Identity:
    """Our side of the handshake."""

    keypair: KeyPair
    chain_id: str
    listen_url: str


async def handshake(ws: WebSocketLike, me: Identity, *, max_message: int, timeout: float,
                    is_banned: Callable[[str], bool]) -> Hello:
    """Run the handshake on an open WebSocket; return the authenticated peer's hello.

    Raises :class:`HandshakeError` on any failure; the caller closes the socket with its code.
    """
    nonce = os.urandom(NONCE_SIZE)
    try:
        async with asyncio.timeout(timeout):
            await ws.send_bytes(hello_frame(me.chain_id, me.keypair.node_id, me.listen_url, nonce))
            hello = _check_hello(await _next_frame(ws, max_message, "hello"), me, is_banned)
            proof = auth_bytes(me.chain_id, hello.nonce, nonce, me.keypair.node_id,
                               hello.node_id, me.listen_url)
            await ws.send_bytes(auth_frame(me.keypair.sign(proof)))
            signature = parse_auth(await _next_frame(ws, max_message, "auth"))
    except TimeoutError as exc:
        raise HandshakeError("timeout", Close.TIMEOUT, f"no handshake within {timeout}s") from exc
    except DecodeError as exc:
        raise HandshakeError("bad_hello", Close.BAD_HELLO, str(exc)) from exc
    except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
        raise HandshakeError("closed", Close.SHUTDOWN, f"connection lost: {exc}") from exc
    expected = auth_bytes(me.chain_id, nonce, hello.nonce, hello.node_id, me.keypair.node_id,
                          hello.listen_url)
    if not verify(hello.node_id, expected, signature):
        raise HandshakeError("bad_auth", Close.BAD_AUTH, "signature does not prove the node id")
    return hello


async def _next_frame(ws: WebSocketLike, max_message: int, expecting: str) -> list:
    msg = await ws.receive()
    if msg.type is aiohttp.WSMsgType.BINARY:
        return decode_frame(msg.data, max_message)
    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
        code = ws.close_code
        why = msg.extra if isinstance(msg.extra, str) and msg.extra else ""
        raise HandshakeError("refused", Close.SHUTDOWN,
                             f"peer closed while we awaited {expecting} (code {code}) {why}".strip())
    if msg.type is aiohttp.WSMsgType.ERROR:
        raise HandshakeError("closed", Close.SHUTDOWN, f"transport error: {msg.data}")
    raise DecodeError(f"expected a binary {expecting} frame, got {msg.type.name}")


def _check_hello(frame: list, me: Identity, is_banned: Callable[[str], bool]) -> Hello:
    hello = parse_hello(frame)
    if hello.version != PROTOCOL_VERSION:
        raise HandshakeError("version", Close.VERSION,
                             f"protocol version {hello.version}, we speak {PROTOCOL_VERSION}")
    if hello.chain_id != me.chain_id:
        raise HandshakeError("wrong_chain", Close.WRONG_CHAIN,
                             f"expected chain {me.chain_id!r}, got {hello.chain_id!r}")
    if hello.node_id == me.keypair.node_id:
        raise HandshakeError("self", Close.SELF, "connected to ourselves")
    if is_banned(hello.node_id):
        raise HandshakeError("banned", Close.BANNED, f"node {hello.node_id[:16]} is banned")
    return hello
