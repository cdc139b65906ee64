"""Several real gossip nodes on 127.0.0.1: dissemination, topologies, peer management."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from gossip import Verdict
from gossip.crypto import KeyPair
from tests.gossip.conftest import TOPIC, NodeFactory, bind_loopback, url_of, wait_until


async def full_mesh(make_node: NodeFactory, n: int, **settings: object) -> list:
    first = await make_node(**settings)
    rest = [await make_node(bootstrap=(first.url,), **settings) for _ in range(n - 1)]
    nodes = [first, *rest]
    # Everyone learns everyone through peer exchange with the first node.
    await wait_until(lambda: all(len(x.gossip.peers()) == n - 1 for x in nodes))
    return nodes


async def test_publish_reaches_every_node_exactly_once(make_node: NodeFactory) -> None:
    nodes = await full_mesh(make_node, 4)
    msg_ids = [await node.gossip.publish(TOPIC, f"from {i}".encode()) for i, node in enumerate(nodes)]
    assert len(set(msg_ids)) == 4
    await wait_until(lambda: all(len(x.delivered) == 3 for x in nodes))
    await asyncio.sleep(0.2)  # time for any stray duplicate to show up
    for i, node in enumerate(nodes):
        expected = sorted(f"from {j}".encode() for j in range(4) if j != i)
        assert sorted(node.bodies()) == expected  # each once; never our own
        m = node.gossip.metrics()
        assert m.topics[TOPIC].delivered == 3
        assert m.topics[TOPIC].published == 1
        assert m.peers_connected == 3
    # Flooding: each node forwards each foreign message to the peers other than its source and
    # publisher, so copies are received more than once and dropped as duplicates, not redelivered.
    assert sum(x.gossip.metrics().drops["duplicate"] for x in nodes) > 0


async def test_line_topology_forwards_over_several_hops(make_node: NodeFactory) -> None:
    # Slot limits keep the ends from meeting although peer exchange tells them about each other.
    b = await make_node(max_inbound=2, max_outbound=0)
    a = await make_node(bootstrap=(b.url,), max_inbound=0, max_outbound=1)
    c = await make_node(bootstrap=(b.url,), max_inbound=0, max_outbound=1)
    await wait_until(lambda: a.peer_ids() == {b.node_id} and c.peer_ids() == {b.node_id}
                     and b.peer_ids() == {a.node_id, c.node_id})
    msg_id = await a.gossip.publish(TOPIC, b"hop hop")
    await wait_until(lambda: c.bodies() == [b"hop hop"])
    assert b.bodies() == [b"hop hop"] and a.bodies() == []
    assert c.delivered[0].sender == a.node_id  # original publisher's signature, forwarded as is
    assert c.delivered[0].msg_id("fedchain-test") == msg_id
    assert a.peer_ids() == {b.node_id} and c.peer_ids() == {b.node_id}  # still a line
    await wait_until(lambda: c.url in a.gossip.known_urls())  # A heard of C, but had no room to dial it


async def test_reject_blocks_forwarding_and_costs_score(make_node: NodeFactory) -> None:
    b = await make_node(max_inbound=2, max_outbound=0)
    a = await make_node(bootstrap=(b.url,), max_inbound=0, max_outbound=1)
    c = await make_node(bootstrap=(b.url,), max_inbound=0, max_outbound=1)
    await wait_until(lambda: len(b.gossip.peers()) == 2 and len(c.gossip.peers()) == 1)
    b.verdict = lambda env: Verdict.REJECT if env.body.startswith(b"bad") else Verdict.ACCEPT
    await a.gossip.publish(TOPIC, b"bad one")
    await a.gossip.publish(TOPIC, b"good one")
    # Per-link order is kept, so once the good message is through the bad one was decided.
    await wait_until(lambda: c.bodies() == [b"good one"])
    assert b.bodies() == [b"good one"]
    assert b.gossip.metrics().drops["rejected"] == 1
    scores = {p.node_id: p.score for p in b.gossip.peers()}
    assert scores[a.node_id] < 0
    assert scores[c.node_id] == 0
    assert c.gossip.metrics().topics[TOPIC].msgs_in == 1  # the rejected one never reached C


async def test_ignore_blocks_forwarding_without_penalty(make_node: NodeFactory) -> None:
    b = await make_node(max_inbound=2, max_outbound=0)
    a = await make_node(bootstrap=(b.url,), max_inbound=0, max_outbound=1)
    c = await make_node(bootstrap=(b.url,), max_inbound=0, max_outbound=1)
    await wait_until(lambda: len(b.gossip.peers()) == 2 and len(c.gossip.peers()) == 1)
    b.verdict = lambda env: Verdict.IGNORE if env.body == b"meh" else Verdict.ACCEPT
    await a.gossip.publish(TOPIC, b"meh")
    await a.gossip.publish(TOPIC, b"fine")
    await wait_until(lambda: c.bodies() == [b"fine"])
    assert b.gossip.metrics().drops["ignored"] == 1
    assert all(p.score == 0 for p in b.gossip.peers())


async def test_peer_exchange_finds_a_node_we_never_heard_of(make_node: NodeFactory) -> None:
    a = await make_node()
    c = await make_node(bootstrap=(a.url,))
    await wait_until(lambda: a.peer_ids() == {c.node_id})
    d = await make_node(bootstrap=(a.url,))  # knows only A
    await wait_until(lambda: d.peer_ids() == {a.node_id, c.node_id})
    assert c.url in d.gossip.known_urls()
    await d.gossip.publish(TOPIC, b"hello C")
    await wait_until(lambda: c.bodies() == [b"hello C"])


async def test_publish_without_peers_returns_an_id(make_node: NodeFactory) -> None:
    lonely = await make_node()
    msg_id = await lonely.gossip.publish(TOPIC, b"anyone?")
    assert isinstance(msg_id, bytes) and len(msg_id) == 32
    assert lonely.gossip.metrics().topics[TOPIC].msgs_out == 0


async def test_reconnects_after_a_peer_restarts(make_node: NodeFactory) -> None:
    b = await make_node()
    a = await make_node(bootstrap=(b.url,))
    await wait_until(lambda: a.peer_ids() == {b.node_id})
    port = int(b.url.rsplit(":", 1)[1])
    await b.stop()
    await wait_until(lambda: a.peer_ids() == set())
    b2 = await make_node(keypair=b.keypair, port=port)  # same node back on the same address
    await wait_until(lambda: a.peer_ids() == {b.node_id})
    await a.gossip.publish(TOPIC, b"welcome back")
    await wait_until(lambda: b2.bodies() == [b"welcome back"])


async def test_simultaneous_dials_leave_one_connection(make_node: NodeFactory) -> None:
    sock_a, sock_b = bind_loopback(), bind_loopback()
    a = await make_node(sock=sock_a, bootstrap=(url_of(sock_b),), start=False)
    b = await make_node(sock=sock_b, bootstrap=(url_of(sock_a),), start=False)
    await asyncio.gather(a.gossip.start(), b.gossip.start())  # both dial before either hears back
    await wait_until(lambda: a.peer_ids() == {b.node_id} and b.peer_ids() == {a.node_id})
    # There were two connections, and one was closed as a duplicate (each initiator counts its
    # connection as up before the other side has read the last handshake message).
    await wait_until(lambda: sum(x.gossip.metrics().handshake_failures.get("duplicate", 0)
                                 for x in (a, b)) >= 1)
    await asyncio.sleep(0.3)
    assert a.peer_ids() == {b.node_id} and b.peer_ids() == {a.node_id}
    # Both sides kept the connection dialled by the smaller node id.
    a_dialled = a.node_id < b.node_id
    assert [p.direction for p in a.gossip.peers()] == ["out" if a_dialled else "in"]
    assert [p.direction for p in b.gossip.peers()] == ["in" if a_dialled else "out"]
    await a.gossip.publish(TOPIC, b"once")
    await wait_until(lambda: b.bodies() == [b"once"])
    await asyncio.sleep(0.1)
    assert b.bodies() == [b"once"]


async def test_self_connection_is_detected_and_not_retried(make_node: NodeFactory) -> None:
    key = KeyPair.generate()
    a = await make_node(keypair=key)
    twin = await make_node(keypair=key, bootstrap=(a.url,))  # same identity, other address
    await wait_until(lambda: twin.gossip.metrics().handshake_failures.get("self", 0) >= 1)
    await asyncio.sleep(0.2)
    assert twin.gossip.peers() == [] and a.gossip.peers() == []
    assert a.url not in twin.gossip.known_urls()  # never dialled again


async def test_wrong_chain_peer_is_refused_on_both_sides(make_node: NodeFactory) -> None:
    a = await make_node()
    other = await make_node(chain_id="another-chain", bootstrap=(a.url,))
    await wait_until(lambda: a.gossip.metrics().drops["wrong_chain"] >= 1
                     and other.gossip.metrics().drops["wrong_chain"] >= 1)
    assert a.gossip.peers() == [] and other.gossip.peers() == []


async def test_stop_leaves_no_tasks_or_open_sessions(make_node: NodeFactory) -> None:
    nodes = await full_mesh(make_node, 3)
    await nodes[0].gossip.publish(TOPIC, b"bye")
    await wait_until(lambda: all(len(x.delivered) == 1 for x in nodes[1:]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await asyncio.gather(*(x.stop() for x in nodes))
        await asyncio.sleep(0)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == []


async def test_publish_and_subscribe_reject_bad_arguments(make_node: NodeFactory) -> None:
    node = await make_node(max_message=4096)
    with pytest.raises(ValueError, match="exceeds max_message"):
        await node.gossip.publish(TOPIC, b"x" * 4096)
    with pytest.raises(ValueError, match="topic"):
        await node.gossip.publish("", b"x")
    with pytest.raises(TypeError):
        await node.gossip.publish(TOPIC, "text")  # type: ignore[arg-type]

    async def validate(env):
        return Verdict.ACCEPT

    async def deliver(env):
        return None
    with pytest.raises(ValueError, match="already has a subscriber"):
        node.gossip.subscribe(TOPIC, validate, deliver)


async def test_all_peers_together_buffer_no_more_than_the_node_budget(make_node: NodeFactory) -> None:
    """Each peer's queues are bounded, but a bound per peer times 32 peers was 1 GiB at the
    defaults. Here three senders flood a node whose validator is stuck: their inboxes together
    stay within ``buffer_bytes``, and every byte comes back once the senders are gone."""
    gate = asyncio.Event()
    hub = await make_node(max_message=4096, buffer_bytes=8192, msg_burst=200.0, msg_rate=200.0)

    async def stuck(env: Envelope) -> Verdict:
        await gate.wait()
        return Verdict.ACCEPT

    hub.verdict = stuck
    senders = [await make_node(bootstrap=(hub.url,), max_message=4096) for _ in range(3)]
    await wait_until(lambda: len(hub.gossip.peers()) == 3)
    peak = 0
    for k in range(12):
        for i, s in enumerate(senders):
            await s.gossip.publish(TOPIC, bytes([i, k]) * 1400)
        await asyncio.sleep(0.02)
        peak = max(peak, sum(p.buffered for p in hub.gossip._peers.values()))
    await wait_until(lambda: hub.gossip.metrics().drops["queue_full"] > 0)
    assert 0 < peak <= 8192, f"peers buffered {peak} bytes together (budget 8192)"
    gate.set()
    await asyncio.gather(*(s.stop() for s in senders))
    await wait_until(lambda: not hub.gossip.peers() and hub.gossip.buffers.used == 0)
