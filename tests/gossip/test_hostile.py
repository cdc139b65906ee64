"""Hostile input from a raw peer: every bad frame is dropped and counted with the right reason,
the connection task survives, and a valid message sent afterwards is still delivered; anything
that does not authenticate ends the session without costing the claimed node id anything."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from gossip import Verdict
from gossip.codec import pack
from gossip.crypto import KeyPair
from gossip.wire import PROTOCOL_VERSION
from tests.gossip.conftest import CHAIN, TOPIC, Node, NodeFactory, wait_until
from tests.gossip.rawpeer import RawPeer

MAX = 64 * 1024


@pytest.fixture
async def node(make_node: NodeFactory) -> Node:
    return await make_node(max_message=MAX)


@pytest.fixture
async def raw(node: Node, make_raw) -> RawPeer:
    peer = make_raw()
    await peer.connect_and_handshake(node.url)
    await wait_until(lambda: node.peer_ids() == {peer.node_id})
    return peer


async def still_works(node: Node, raw: RawPeer, body: bytes = b"valid after all") -> None:
    """The connection survived: a valid message sent now is delivered."""
    await raw.send(raw.envelope(TOPIC, body))
    await wait_until(lambda: body in node.bodies())
    assert raw.node_id in node.peer_ids()


def drops(node: Node) -> dict[str, int]:
    return node.gossip.metrics().drops


def score(node: Node, node_id: str) -> float:
    return {p.node_id: p.score for p in node.gossip.peers()}[node_id]


@pytest.mark.parametrize("frame", [
    b"\xc1",                                  # a byte msgpack never uses
    b"\x92\xa3msg",                           # truncated array
    pack(["msg", "t"]),                       # wrong shape
    pack({"msg": 1}),                         # not an array
    pack([2, CHAIN, "x", b"", ""]),           # handshake payload after the handshake
    pack(["nonsense"]),                       # unknown frame type
    pack(["peers", "not a list"]),
    pack(["msg", "t", "not-a-node-id", 1, b"", b"\x00" * 64]),
    pack(["msg", "t", "ab" * 32, -5, b"", b"\x00" * 64]),
    pack(["msg", "t", "ab" * 32, 1, "text body", b"\x00" * 64]),
    pack(["msg", "t", "ab" * 32, 1, b"", b"short sig"]),
    pack(["msg", "t", "ab" * 32, 1, b"", b"\x00" * 64]) + b"\x00",  # trailing bytes
    pack(["choke"]),                          # control frames: no topic, not a topic, extra item
    pack(["choke", 7]),
    pack(["unchoke", "t", "t"]),
])
async def test_malformed_frames(node: Node, raw: RawPeer, frame: bytes) -> None:
    await raw.send(frame)
    await wait_until(lambda: drops(node)["malformed"] == 1)
    assert score(node, raw.node_id) < 0
    await still_works(node, raw)


async def ends_session_unblamed(node: Node, raw: RawPeer, make_raw, code: int) -> None:
    """The node closed the session with ``code``, counted it, and the id lost nothing."""
    await wait_until(lambda: drops(node)["session"] == 1 and node.peer_ids() == set())
    assert raw.ws is not None and raw.ws.close_code == code
    assert node.gossip.score(raw.node_id) == 0 and node.gossip.banned() == {}
    again = make_raw(keypair=raw.keypair)
    await again.connect_and_handshake(node.url)
    await still_works(node, again)


@pytest.mark.parametrize("send", [
    lambda ws: ws.send_str("hello?"),                     # text: never part of the protocol now
    lambda ws: ws.send_bytes(b"\xc1"),                    # binary junk outside the session
    lambda ws: ws.send_bytes(b"\x00" * 32 + b"\x01" * 17),  # looks like a sealed message, is not
])
async def test_unsealed_message_ends_the_session_without_blame(node: Node, raw: RawPeer, make_raw,
                                                               send) -> None:
    assert raw.ws is not None
    await send(raw.ws)
    await ends_session_unblamed(node, raw, make_raw, 4010)


async def test_tampered_or_replayed_transport_message(node: Node, raw: RawPeer, make_raw) -> None:
    assert raw.ws is not None
    sealed = raw.seal(pack(raw.envelope(TOPIC, b"once")))
    await raw.send_unsealed(sealed[0])
    await wait_until(lambda: node.bodies() == [b"once"])
    await raw.send_unsealed(sealed[0])  # replayed: its nonce is spent
    await ends_session_unblamed(node, raw, make_raw, 4010)
    other = make_raw()
    await other.connect_and_handshake(node.url)
    tampered = bytearray(other.seal(pack(other.envelope(TOPIC, b"x")))[0])
    tampered[5] ^= 0xFF
    await other.send_unsealed(bytes(tampered))
    await wait_until(lambda: drops(node)["session"] == 2 and other.node_id not in node.peer_ids())
    assert node.gossip.score(other.node_id) == 0


async def test_oversized_frame_is_penalised_and_closed(node: Node, raw: RawPeer, make_raw) -> None:
    await raw.send(raw.envelope(TOPIC, b"x" * MAX))  # a little over max_message once framed
    await wait_until(lambda: drops(node)["oversized"] == 1 and node.peer_ids() == set())
    assert raw.ws is not None and raw.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert node.gossip.score(raw.node_id) < 0  # it authenticated: the id pays
    again = make_raw(keypair=raw.keypair)  # not banned for one offence: may come back
    await again.connect_and_handshake(node.url)
    await still_works(node, again)


async def test_bad_flag_byte_is_malformed(node: Node, raw: RawPeer) -> None:
    assert raw.ws is not None
    for sealed in raw.seal(b"\x91\xa1x", flags=b"\x07"):
        await raw.send_unsealed(sealed)
    await wait_until(lambda: drops(node)["malformed"] == 1)
    await still_works(node, raw)


async def test_message_beyond_the_transport_limit_ends_the_session(node: Node, raw: RawPeer,
                                                                   make_raw) -> None:
    await raw.send_unsealed(b"\x00" * 65536)  # one WebSocket message over the Noise maximum
    await ends_session_unblamed(node, raw, make_raw, aiohttp.WSCloseCode.MESSAGE_TOO_BIG)


async def test_large_frames_travel_in_chunks(make_node: NodeFactory, make_raw) -> None:
    node = await make_node(max_message=1 << 20)
    raw = make_raw()
    await raw.connect_and_handshake(node.url)
    body = bytes(range(256)) * 2000  # 512 kB: eight transport messages
    await still_works(node, raw, body)


async def test_bad_signature(node: Node, raw: RawPeer) -> None:
    await raw.send(raw.envelope(TOPIC, b"forged", signer=KeyPair.generate()))
    await wait_until(lambda: drops(node)["bad_signature"] == 1)
    assert score(node, raw.node_id) < 0
    # The forgery did not poison the seen-cache: the genuine message with the same fields passes.
    await still_works(node, raw, b"forged")


async def test_forgery_in_another_publishers_name(node: Node, raw: RawPeer) -> None:
    victim = KeyPair.generate()
    frame = raw.envelope(TOPIC, b"I am the victim")
    frame[2] = victim.node_id  # claim another sender, keep our signature
    await raw.send(frame)
    await wait_until(lambda: drops(node)["bad_signature"] == 1)
    await still_works(node, raw)


async def test_replayed_envelope_is_a_duplicate(node: Node, raw: RawPeer) -> None:
    frame = raw.envelope(TOPIC, b"once only")
    await raw.send(frame)
    await raw.send(frame)
    await wait_until(lambda: drops(node)["duplicate"] == 1)
    assert node.bodies() == [b"once only"]
    assert score(node, raw.node_id) == 0  # duplicates cost nothing
    await still_works(node, raw)


@pytest.mark.parametrize("offset_s", [-121, -3600, 121])
async def test_seq_outside_freshness_window_is_stale(node: Node, raw: RawPeer, offset_s: int) -> None:
    seq = (time.time_ns() // 1_000_000 + offset_s * 1000) * 1000
    await raw.send(raw.envelope(TOPIC, b"from another time", seq=seq))
    await wait_until(lambda: drops(node)["stale"] == 1)
    assert node.bodies() == []
    await still_works(node, raw)


async def test_unknown_topic(node: Node, raw: RawPeer) -> None:
    await raw.send(raw.envelope("nobody-listens", b"?"))
    await wait_until(lambda: drops(node)["unknown_topic"] == 1)
    assert "nobody-listens" not in node.gossip.metrics().topics
    await still_works(node, raw)


async def test_rate_flood_is_limited_then_recovers(make_node: NodeFactory, make_raw) -> None:
    node = await make_node(msg_rate=50, msg_burst=20)
    raw = make_raw()
    await raw.connect_and_handshake(node.url)
    for i in range(200):
        await raw.send(raw.envelope(TOPIC, b"flood %d" % i))
    await wait_until(lambda: drops(node)["rate_limited"] + len(node.delivered) == 200)
    assert drops(node)["rate_limited"] >= 100
    assert score(node, raw.node_id) < 0
    await asyncio.sleep(0.1)  # let the bucket refill
    await still_works(node, raw, b"after the flood")


async def test_byte_rate_is_limited(make_node: NodeFactory, make_raw) -> None:
    node = await make_node(max_message=MAX, byte_rate=4 * MAX, byte_burst=2 * MAX)
    raw = make_raw()
    await raw.connect_and_handshake(node.url)
    for i in range(6):
        await raw.send(raw.envelope(TOPIC, b"%d" % i + b"x" * (MAX - 200)))
    await wait_until(lambda: drops(node)["rate_limited"] + len(node.delivered) == 6)
    assert drops(node)["rate_limited"] >= 3
    await asyncio.sleep(0.3)
    await still_works(node, raw)


async def test_validator_and_deliver_errors_do_not_kill_the_connection(node: Node, raw: RawPeer) -> None:
    def explode(env):
        if env.body == b"boom":
            raise RuntimeError("validator bug")
        return Verdict.ACCEPT
    node.verdict = explode
    await raw.send(raw.envelope(TOPIC, b"boom"))
    await wait_until(lambda: drops(node)["validator_error"] == 1)
    assert score(node, raw.node_id) == 0  # our bug, not the peer's fault
    await still_works(node, raw)


async def test_validator_returning_garbage_is_an_error(node: Node, raw: RawPeer) -> None:
    node.verdict = lambda env: "yes"  # type: ignore[assignment, return-value]
    await raw.send(raw.envelope(TOPIC, b"?"))
    await wait_until(lambda: drops(node)["validator_error"] == 1)
    node.verdict = lambda env: Verdict.ACCEPT
    await still_works(node, raw)


async def test_wrong_chain_at_handshake(node: Node, make_raw) -> None:
    raw = make_raw()
    await raw.connect(node.url)
    with pytest.raises(AssertionError, match="handshake refused"):
        await raw.handshake(chain_id="some-other-chain")
    assert raw.ws is not None and raw.ws.close_code == 4001
    await wait_until(lambda: drops(node)["wrong_chain"] == 1)
    assert node.gossip.metrics().handshake_failures == {"wrong_chain": 1}
    assert node.peer_ids() == set()


async def test_handshake_with_someone_elses_key(node: Node, make_raw) -> None:
    raw = make_raw()
    await raw.connect(node.url)
    # Claims an id it cannot prove. The node answers with its own proof before checking ours
    # (both sides prove at once), then closes.
    await raw.handshake(signer=KeyPair.generate())
    assert raw.ws is not None
    assert (await raw.ws.receive()).type is aiohttp.WSMsgType.CLOSE
    assert raw.ws.close_code == 4004
    await wait_until(lambda: drops(node)["handshake"] == 1)
    assert node.gossip.metrics().handshake_failures == {"bad_auth": 1}


@pytest.mark.parametrize("first", [b"\xc1", b"\x01" * 32 + pack({"a": 1}), b"\x01" * 32 + pack([PROTOCOL_VERSION])])
async def test_garbage_instead_of_the_first_handshake_message(node: Node, make_raw, first: bytes) -> None:
    raw = make_raw()
    await raw.connect(node.url)
    await raw.send_unsealed(first)
    assert raw.ws is not None
    while (await raw.ws.receive()).type is aiohttp.WSMsgType.BINARY:
        pass
    assert raw.ws.close_code == 4003
    await wait_until(lambda: node.gossip.metrics().handshake_failures == {"bad_hello": 1})


async def test_oversized_handshake_message_is_refused_unread(node: Node, make_raw) -> None:
    raw = make_raw()
    await raw.connect(node.url)
    await raw.send_unsealed(b"\x80" * 2000)  # over HANDSHAKE_MAX (1024)
    assert raw.ws is not None
    assert (await raw.ws.receive()).type is aiohttp.WSMsgType.CLOSE
    assert raw.ws.close_code == 1009
    await wait_until(lambda: node.gossip.metrics().handshake_failures == {"oversized": 1})


async def test_silent_peer_times_out_in_handshake(make_node: NodeFactory, make_raw) -> None:
    node = await make_node(handshake_timeout=0.2)
    raw = make_raw()
    await raw.connect(node.url)
    assert raw.ws is not None
    while (await raw.ws.receive()).type is aiohttp.WSMsgType.BINARY:
        pass
    assert raw.ws.close_code == 4008
    assert node.gossip.metrics().handshake_failures == {"timeout": 1}


async def test_second_connection_with_same_identity_is_refused(node: Node, raw: RawPeer, make_raw) -> None:
    twin = make_raw(keypair=raw.keypair)
    await twin.connect(node.url)
    await twin.handshake()  # both proofs are fine; the node then finds it knows this id
    assert twin.ws is not None
    assert (await twin.ws.receive()).type is aiohttp.WSMsgType.CLOSE
    assert twin.ws.close_code == 4007
    assert node.gossip.metrics().handshake_failures == {"duplicate": 1}
    await still_works(node, raw)


async def test_misbehaving_peer_is_banned_and_refused_while_banned(make_node: NodeFactory, make_raw) -> None:
    node = await make_node(score_threshold=-50, ban_seconds=0.5)
    raw = make_raw()
    await raw.connect_and_handshake(node.url)
    for _ in range(3):  # 3 x 20 > 50
        await raw.send(raw.envelope(TOPIC, b"forged", signer=KeyPair.generate()))
    await wait_until(lambda: node.peer_ids() == set() and raw.ws.close_code is not None)
    assert raw.ws is not None and raw.ws.close_code == 4006
    m = node.gossip.metrics()
    assert m.bans == 1 and m.peers_banned == 1 and m.drops["bad_signature"] == 3
    again = make_raw(keypair=raw.keypair)
    await again.connect(node.url)
    await again.handshake()  # the node learns who we are from the last message, then refuses
    assert again.ws is not None
    assert (await again.ws.receive()).type is aiohttp.WSMsgType.CLOSE
    assert again.ws.close_code == 4006
    assert node.gossip.metrics().handshake_failures == {"banned": 1}
    await asyncio.sleep(0.6)  # the ban expires, and with it the bad score
    back = make_raw(keypair=raw.keypair)
    await back.connect_and_handshake(node.url)
    await still_works(node, back)
    assert score(node, back.node_id) == 0


async def test_messages_are_not_sent_back_to_their_source(make_node: NodeFactory, make_raw) -> None:
    node = await make_node()
    other = await make_node(bootstrap=(node.url,))
    raw = make_raw()
    await raw.connect_and_handshake(node.url)
    await wait_until(lambda: len(node.gossip.peers()) == 2)
    # The raw peer relays a message someone else published.
    await raw.send(raw.envelope(TOPIC, b"relay me", publisher=KeyPair.generate()))
    await wait_until(lambda: other.bodies() == [b"relay me"])
    await other.gossip.publish(TOPIC, b"from other")
    # Per-link order: had 'relay me' been sent back to its source, it would arrive first.
    await wait_until(lambda: [f[4] for f in raw.msg_frames()] == [b"from other"])
    assert node.gossip.metrics().topics[TOPIC].msgs_out == 2


async def test_slow_validator_fills_the_inbox(make_node: NodeFactory, make_raw) -> None:
    node = await make_node(inbox_size=2)
    gate = asyncio.Event()

    async def slow(env):
        await gate.wait()
        return Verdict.ACCEPT
    node.verdict = slow
    raw = make_raw()
    await raw.connect_and_handshake(node.url)
    for i in range(6):
        await raw.send(raw.envelope(TOPIC, b"%d" % i))
    # Two queued, and one more if the worker took the first before the rest arrived; the others
    # are dropped, while the reader kept reading throughout.
    await wait_until(lambda: drops(node)["queue_full"] >= 3)
    gate.set()
    await wait_until(lambda: len(node.delivered) == 6 - drops(node)["queue_full"])
    assert node.bodies() == [b"%d" % i for i in range(len(node.delivered))]
    # The dropped ones were never marked seen: resent, they are accepted.
    await still_works(node, raw, b"5")


async def test_slow_reader_does_not_block_the_publisher_or_others(make_node: NodeFactory, make_raw) -> None:
    node = await make_node(send_queue=4)
    fast = await make_node(bootstrap=(node.url,), byte_rate=1 << 28)  # 40 MiB at full speed
    stuck = make_raw()
    await stuck.connect(node.url)
    await stuck.handshake()  # and then never reads again
    await wait_until(lambda: len(node.gossip.peers()) == 2)
    body = b"y" * (1 << 20)
    for i in range(40):
        await node.gossip.publish(TOPIC, b"%02d" % i + body)
        await wait_until(lambda n=i + 1: len(fast.delivered) == n)
    assert [e.body[:2] for e in fast.delivered] == [b"%02d" % i for i in range(40)]
    # 40 MiB for the stuck peer: socket buffers took a few, its queue 4, the rest overflowed.
    assert drops(node)["queue_full"] >= 10


async def test_peer_that_stops_answering_pings_is_dropped(make_node: NodeFactory, make_raw) -> None:
    node = await make_node(ping_interval=0.2)
    raw = make_raw()
    await raw.connect(node.url)
    await raw.handshake()  # then goes silent: never reads, so never answers a ping
    await wait_until(lambda: node.peer_ids() == {raw.node_id})
    await wait_until(lambda: node.peer_ids() == set(), timeout=3.0)


async def test_ban_from_the_layer_above(node: Node, raw: RawPeer, make_raw) -> None:
    node.gossip.ban(raw.node_id, seconds=60)
    await wait_until(lambda: node.peer_ids() == set())
    assert raw.ws is not None and raw.ws.close_code == 4006
    again = make_raw(keypair=raw.keypair)
    await again.connect(node.url)
    await again.handshake()
    assert again.ws is not None
    assert (await again.ws.receive()).type is aiohttp.WSMsgType.CLOSE
    assert again.ws.close_code == 4006
