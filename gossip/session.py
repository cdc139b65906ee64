"""Authenticated, encrypted sessions: the Noise XX handshake with node identities, and the sealed
channel every later frame travels in.

The dialler is the Noise initiator. Its first message carries only an ephemeral key and
``[version, chain_id]`` in clear; the responder checks those, then sends its ephemeral and
(encrypted) static keys with its identity payload ``[version, chain_id, node_id, signature,
listen_url]``, where the signature by the node id covers the Noise static key (as libp2p does);
the initiator checks it and answers with its own. Noise's DH mixing proves each side holds the
static key it sent, and the signature proves the node id owns that static key, so a relay can
neither complete a session as someone else nor splice two sessions: it holds no key that the
transcript would accept. Afterwards each direction has its own key and counter nonce; a frame
that fails authentication ends the session, and is blamed on nobody (a relay could have sent it).

Everything before authentication is cheap by construction: messages larger than
``HANDSHAKE_MAX`` are refused unread, payloads decode with tight limits, and the whole exchange
has a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import aiohttp

from gossip.codec import DecodeError
from gossip.crypto import KeyPair, verify
from gossip.noise import (
    CipherState,
    MalformedMessage,
    NoiseError,
    XXHandshake,
    generate_private,
    public_key,
)
from gossip.wire import (
    CHUNK_DATA,
    HANDSHAKE_MAX,
    LAST,
    MORE,
    PROLOGUE,
    PROTOCOL_VERSION,
    Close,
    Hello,
    identity_payload,
    opening_payload,
    parse_identity,
    parse_opening,
    static_key_bytes,
)

_MAX_CLOSE_MESSAGE = 123  # RFC 6455: a close frame's reason fits in 123 bytes
_CLOSED_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


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


class SessionError(Exception):
    """A frame that failed authentication: the session is over, and nobody is blamed."""


class OversizedFrame(Exception):
    """An authenticated peer sent a frame larger than ``max_message``."""


@dataclass(frozen=True)
class Identity:
    """Our side of the handshake. The Noise static key is drawn once per process and bound to
    the node id by ``static_signature``; the node key itself never does Diffie-Hellman."""

    keypair: KeyPair
    chain_id: str
    listen_url: str
    static_private: bytes = field(default_factory=generate_private, repr=False)

    @cached_property
    def static_signature(self) -> bytes:
        return self.keypair.sign(static_key_bytes(self.chain_id, public_key(self.static_private)))

    def payload(self) -> bytes:
        return identity_payload(self.chain_id, self.keypair.node_id, self.static_signature,
                                self.listen_url)


class SecureChannel:
    """Seals frames into transport messages and opens them, in order, one direction each.

    A frame becomes one or more Noise transport messages (one WebSocket message each) whose
    plaintext is a flag byte (``MORE`` or ``LAST``) and up to ``CHUNK_DATA`` bytes of the frame.
    Callers must send sealed messages in the order :meth:`seal` made them, and hand received
    ones to :meth:`open` in arrival order (the nonces are implicit counters)."""

    def __init__(self, send: CipherState, receive: CipherState, max_frame: int) -> None:
        self._send = send
        self._receive = receive
        self.max_frame = max_frame
        self._parts: list[bytes] = []
        self._size = 0

    def seal(self, frame: bytes) -> list[bytes]:
        view = memoryview(frame)
        sealed = []
        for start in range(0, max(len(frame), 1), CHUNK_DATA):
            piece = view[start:start + CHUNK_DATA]
            flag = LAST if start + CHUNK_DATA >= len(frame) else MORE
            sealed.append(self._send.encrypt(b"", bytes([flag]) + piece))
        return sealed

    def open(self, message: bytes) -> bytes | None:
        """The complete frame this message ends, or None if more are to come.

        Raises :class:`SessionError` for a message that does not authenticate (fatal),
        :class:`OversizedFrame` when the frame grows past ``max_frame``, and
        :class:`DecodeError` for an authenticated message with a bad flag byte."""
        try:
            plain = self._receive.decrypt(b"", message)
        except NoiseError as exc:
            raise SessionError(str(exc)) from exc
        if not plain or plain[0] not in (MORE, LAST):
            self._reset()
            raise DecodeError("transport message without a valid flag byte")
        self._size += len(plain) - 1
        if self._size > self.max_frame:
            self._reset()
            raise OversizedFrame(f"frame exceeds {self.max_frame} bytes")
        self._parts.append(plain[1:])
        if plain[0] == MORE:
            return None
        frame = b"".join(self._parts)
        self._reset()
        return frame

    def _reset(self) -> None:
        self._parts = []
        self._size = 0


async def handshake(ws: WebSocketLike, me: Identity, *, initiator: bool, max_frame: int,
                    timeout: float, is_banned: Callable[[str], bool],
                    ephemeral: bytes | None = None) -> tuple[Hello, SecureChannel]:
    """Run the handshake on an open WebSocket; return the authenticated peer and the channel.

    ``ephemeral`` is this handshake's fresh X25519 key (drawn from the OS if not given).
    Raises :class:`HandshakeError` on any failure; the caller closes the socket with its code.
    """
    noise = XXHandshake(initiator, me.static_private, PROLOGUE, ephemeral)
    try:
        async with asyncio.timeout(timeout):
            if initiator:
                await ws.send_bytes(noise.write_message(opening_payload(me.chain_id)))
                hello = _check_identity(noise, noise.read_message(await _next(ws, "message 2")),
                                        me, is_banned)
                await ws.send_bytes(noise.write_message(me.payload()))
            else:
                _check_opening(noise.read_message(await _next(ws, "message 1")), me)
                await ws.send_bytes(noise.write_message(me.payload()))
                hello = _check_identity(noise, noise.read_message(await _next(ws, "message 3")),
                                        me, is_banned)
    except TimeoutError as exc:
        raise HandshakeError("timeout", Close.TIMEOUT, f"no handshake within {timeout}s") from exc
    except (MalformedMessage, DecodeError) as exc:
        raise HandshakeError("bad_hello", Close.BAD_HELLO, str(exc)) from exc
    except NoiseError as exc:
        raise HandshakeError("bad_auth", Close.BAD_AUTH, str(exc)) from exc
    except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
        raise HandshakeError("closed", Close.SHUTDOWN, f"connection lost: {exc}") from exc
    send, receive = noise.split()
    return hello, SecureChannel(send, receive, max_frame)


async def _next(ws: WebSocketLike, expecting: str) -> bytes:
    msg = await ws.receive()
    if msg.type is aiohttp.WSMsgType.BINARY:
        if len(msg.data) > HANDSHAKE_MAX:
            raise HandshakeError("oversized", Close.TOO_BIG,
                                 f"{expecting} of {len(msg.data)} bytes (at most {HANDSHAKE_MAX})")
        return msg.data
    if msg.type in _CLOSED_TYPES:
        code = ws.close_code
        why = msg.extra if isinstance(msg.extra, str) and msg.extra else ""
        # A peer on another chain or version tells us so by its close code: count it as such.
        reason = {Close.WRONG_CHAIN: "wrong_chain", Close.VERSION: "version"}.get(code, "refused")
        raise HandshakeError(reason, Close.SHUTDOWN,
                             f"peer closed while we awaited {expecting} (code {code}) {why}".strip())
    if msg.type is aiohttp.WSMsgType.ERROR:
        too_big = getattr(msg.data, "code", None) == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        raise HandshakeError("oversized" if too_big else "closed", Close.TOO_BIG if too_big else Close.SHUTDOWN,
                             f"transport error: {msg.data}")
    raise DecodeError(f"expected a binary {expecting}, got {msg.type.name}")


def _check_chain(version: int, chain_id: str | None, me: Identity) -> None:
    if version != PROTOCOL_VERSION:
        raise HandshakeError("version", Close.VERSION,
                             f"protocol version {version}, we speak {PROTOCOL_VERSION}")
    if chain_id != me.chain_id:
        raise HandshakeError("wrong_chain", Close.WRONG_CHAIN,
                             f"expected chain {me.chain_id!r}, got {chain_id!r}")


def _check_opening(payload: bytes, me: Identity) -> None:
    _check_chain(*parse_opening(payload), me)


def _check_identity(noise: XXHandshake, payload: bytes, me: Identity,
                    is_banned: Callable[[str], bool]) -> Hello:
    hello = parse_identity(payload)
    _check_chain(hello.version, hello.chain_id, me)
    assert noise.remote_static is not None
    if not verify(hello.node_id, static_key_bytes(me.chain_id, noise.remote_static), hello.signature):
        raise HandshakeError("bad_auth", Close.BAD_AUTH, "the node id did not sign this session's key")
    if hello.node_id == me.keypair.node_id:
        raise HandshakeError("self", Close.SELF, "connected to ourselves")
    if is_banned(hello.node_id):
        raise HandshakeError("banned", Close.BANNED, f"node {hello.node_id[:16]} is banned")
    return hello
