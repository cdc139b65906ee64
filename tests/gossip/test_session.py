"""The session: handshake and sealed channel over real WebSockets on 127.0.0.1, and what a relay,
a wrong key or an altered transcript gets out of it (nothing)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from gossip.codec import pack
from gossip.crypto import KeyPair
from gossip.noise import XXHandshake, generate_private
from gossip.session import (
    HandshakeError,
    Identity,
    SecureChannel,
    SessionError,
    handshake,
)
from gossip.wire import (
    PROLOGUE,
    PROTOCOL_VERSION,
    WS_MAX_MESSAGE,
    Close,
    identity_payload,
    static_key_bytes,
)
from tests.localserve import serve

pytestmark = pytest.mark.timeout(30)

CHAIN = "session-test"
Pair = Callable[[], Awaitable[tuple[aiohttp.ClientWebSocketResponse, web.WebSocketResponse]]]


@pytest.fixture
async def ws_pair() -> AsyncIterator[Pair]:
    """Factory of connected (client, server) WebSocket pairs through a real aiohttp server."""
    accepted: asyncio.Queue[web.WebSocketResponse] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_MESSAGE, timeout=0.5)
        await ws.prepare(request)
        await accepted.put(ws)
        await done.wait()
        return ws

    app = web.Application()
    app.router.add_get("/p2p", handler)
    runner, port = await serve(app)
    session = aiohttp.ClientSession()
    sockets: list = []

    async def make() -> tuple[aiohttp.ClientWebSocketResponse, web.WebSocketResponse]:
        client = await session.ws_connect(f"http://127.0.0.1:{port}/p2p", max_msg_size=WS_MAX_MESSAGE)
        server = await accepted.get()
        sockets.extend([client, server])
        return client, server

    yield make
    done.set()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await session.close()
    await runner.cleanup()


def identity(chain: str = CHAIN) -> Identity:
    return Identity(KeyPair.generate(), chain, "http://127.0.0.1:9")


async def both(client_ws, server_ws, client: Identity, server: Identity):
    """Run both sides; each result is (hello, channel) or the HandshakeError it raised."""
    kw = dict(max_frame=1 << 20, timeout=3.0, is_banned=lambda _: False)
    return await asyncio.gather(handshake(client_ws, client, initiator=True, **kw),
                                handshake(server_ws, server, initiator=False, **kw),
                                return_exceptions=True)


async def test_handshake_authenticates_both_sides_and_seals_frames(ws_pair: Pair) -> None:
    client_ws, server_ws = await ws_pair()
    alice, bob = identity(), identity()
    (a_hello, a_chan), (b_hello, b_chan) = await both(client_ws, server_ws, alice, bob)
    assert a_hello.node_id == bob.keypair.node_id and b_hello.node_id == alice.keypair.node_id
    assert a_hello.listen_url == "http://127.0.0.1:9"
    big = bytes(range(256)) * 1000  # 256 kB: several transport messages
    for frame in (b"hello", big, b""):
        for sealed in a_chan.seal(frame):
            assert len(sealed) <= 65535
            await client_ws.send_bytes(sealed)
        got = None
        while got is None:
            got = b_chan.open((await server_ws.receive()).data)
        assert got == frame
    assert a_chan.seal(b"x") != b_chan.seal(b"x")  # one key per direction


def channel_pair() -> tuple[SecureChannel, SecureChannel]:
    alice, bob = XXHandshake(True, generate_private(), PROLOGUE), XXHandshake(False, generate_private(), PROLOGUE)
    bob.read_message(alice.write_message(b""))
    alice.read_message(bob.write_message(b""))
    bob.read_message(alice.write_message(b""))
    a_send, a_recv = alice.split()
    b_send, b_recv = bob.split()
    return SecureChannel(a_send, a_recv, 1 << 20), SecureChannel(b_send, b_recv, 1 << 20)


def test_tampered_replayed_reordered_or_reflected_frames_end_the_session() -> None:
    a, b = channel_pair()
    (first,), (second,) = a.seal(b"one"), a.seal(b"two")
    tampered = bytearray(first)
    tampered[-1] ^= 1
    for attack in (bytes(tampered), second, b.seal(b"reflected")[0]):  # forged, early, wrong key
        with pytest.raises(SessionError):
            b.open(attack)
    assert b.open(first) == b"one"  # failures did not move the receive counter
    with pytest.raises(SessionError):
        b.open(first)  # replayed
    assert b.open(second) == b"two"


async def test_wrong_key_cannot_claim_a_node_id(ws_pair: Pair) -> None:
    client_ws, server_ws = await ws_pair()
    victim, impostor = KeyPair.generate(), KeyPair.generate()

    class Claim(Identity):
        """Claims ``victim``'s id but can only sign with its own key."""

        def payload(self) -> bytes:
            from gossip.noise import public_key
            signature = impostor.sign(static_key_bytes(CHAIN, public_key(self.static_private)))
            return identity_payload(CHAIN, victim.node_id, signature, "")

    client, server = await both(client_ws, server_ws, Claim(impostor, CHAIN, ""), identity())
    assert isinstance(server, HandshakeError) and server.reason == "bad_auth"


async def test_a_relay_cannot_pass_one_nodes_identity_off_on_its_own_session(ws_pair: Pair) -> None:
    """The relay completes a handshake with B itself, then offers A B's identity payload (B's id
    and B's signature) on the session it runs with A: the signature covers B's static key, not the
    relay's, so A refuses. Without B's static key the relay cannot do better."""
    to_b, b_ws = await ws_pair()
    a_ws, from_a = await ws_pair()
    b = identity()
    relay_static = generate_private()
    b_task = asyncio.create_task(handshake(b_ws, b, initiator=False, max_frame=1 << 20, timeout=3,
                                           is_banned=lambda _: False))
    with_b = XXHandshake(True, relay_static, PROLOGUE)
    await to_b.send_bytes(with_b.write_message(pack([PROTOCOL_VERSION, CHAIN])))
    b_identity = with_b.read_message((await to_b.receive()).data)  # B's real payload
    a_task = asyncio.create_task(handshake(a_ws, identity(), initiator=True, max_frame=1 << 20,
                                           timeout=3, is_banned=lambda _: False))
    with_a = XXHandshake(False, relay_static, PROLOGUE)
    with_a.read_message((await from_a.receive()).data)
    await from_a.send_bytes(with_a.write_message(b_identity))
    with pytest.raises(HandshakeError) as refused:
        await a_task
    assert refused.value.reason == "bad_auth"
    b_task.cancel()
    await asyncio.gather(b_task, return_exceptions=True)


async def relay_handshake(ws_pair: Pair, a: Identity, b: Identity,
                          alter: Callable[[int, bytes], bytes]) -> list:
    """A runs the handshake with B through a relay that forwards each message through
    ``alter(index, message)``; returns both results."""
    a_ws, relay_in = await ws_pair()
    relay_out, b_ws = await ws_pair()
    kw = dict(max_frame=1 << 20, timeout=3.0, is_banned=lambda _: False)
    tasks = [asyncio.create_task(handshake(a_ws, a, initiator=True, **kw)),
             asyncio.create_task(handshake(b_ws, b, initiator=False, **kw))]
    await relay_out.send_bytes(alter(0, (await relay_in.receive()).data))
    await relay_in.send_bytes(alter(1, (await relay_out.receive()).data))
    with contextlib.suppress(TimeoutError):  # A may have given up at message 2
        msg = await relay_in.receive(timeout=1.0)
        if msg.type is aiohttp.WSMsgType.BINARY:
            await relay_out.send_bytes(alter(2, msg.data))
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_faithful_relay_changes_nothing(ws_pair: Pair) -> None:
    results = await relay_handshake(ws_pair, identity(), identity(), lambda i, m: m)
    assert not any(isinstance(r, Exception) for r in results)


async def test_transcript_mismatch_fails_the_handshake(ws_pair: Pair) -> None:
    """The first message travels in clear; a relay rewriting it (here: the chain id, so that
    each side believes the other is on its own chain) leaves the two sides with different
    transcripts, and the next message does not authenticate."""
    def rewrite(i: int, message: bytes) -> bytes:
        return message[:32] + pack([PROTOCOL_VERSION, "chain-b"]) if i == 0 else message

    a_result, _ = await relay_handshake(ws_pair, identity("chain-a"), identity("chain-b"), rewrite)
    assert isinstance(a_result, HandshakeError) and a_result.reason == "bad_auth"


async def test_tampered_handshake_message_fails(ws_pair: Pair) -> None:
    def flip(i: int, message: bytes) -> bytes:
        return message[:40] + bytes([message[40] ^ 1]) + message[41:] if i == 2 else message

    _, b_result = await relay_handshake(ws_pair, identity(), identity(), flip)
    assert isinstance(b_result, HandshakeError) and b_result.reason == "bad_auth"


@pytest.mark.parametrize("chain, version, reason, code", [
    ("other-chain", PROTOCOL_VERSION, "wrong_chain", Close.WRONG_CHAIN),
    (CHAIN, PROTOCOL_VERSION - 1, "version", Close.VERSION),
])
async def test_wrong_chain_or_version_is_refused_by_name(ws_pair: Pair, chain: str, version: int,
                                                        reason: str, code: int) -> None:
    client_ws, server_ws = await ws_pair()
    noise = XXHandshake(True, generate_private(), PROLOGUE)
    await client_ws.send_bytes(noise.write_message(pack([version, chain])))
    with pytest.raises(HandshakeError) as refused:
        await handshake(server_ws, identity(), initiator=False, max_frame=1 << 20, timeout=3,
                        is_banned=lambda _: False)
    assert (refused.value.reason, refused.value.code) == (reason, code)
