"""gossipsub and announce-then-pull between real nodes over WebSockets on 127.0.0.1."""

from __future__ import annotations

from gossip import Envelope, Verdict
from gossip.config import MeshParams
from gossip.mesh import GossipSubPolicy
from gossip.pull import PullRule
from tests.gossip.conftest import TOPIC, NodeFactory, wait_until

PULLED = "pulled"
MESH_ONLY = dict(mesh=MeshParams(flood_peers=0, d=2, d_low=1, d_high=3, d_score=1, d_out=0))
"""Forward along the mesh even with few peers (a daemon floods up to 8)."""


async def connected(make_node: NodeFactory, n: int, **settings: object) -> list:
    first = await make_node(**settings)
    nodes = [first] + [await make_node(bootstrap=(first.url,), **settings) for _ in range(n - 1)]
    await wait_until(lambda: all(len(x.gossip.peers()) == n - 1 for x in nodes))
    return nodes


async def test_meshes_form_and_carry_messages_between_real_nodes(make_node: NodeFactory) -> None:
    nodes = await connected(make_node, 5, **MESH_ONLY)
    meshes = [x.gossip.policy for x in nodes]
    assert all(isinstance(m, GossipSubPolicy) for m in meshes)
    await wait_until(lambda: all(1 <= len(m.mesh[TOPIC]) <= 3 for m in meshes))  # grafted by heartbeats
    for i, node in enumerate(nodes):
        await node.gossip.publish(TOPIC, f"from {i}".encode())
    await wait_until(lambda: all(len(x.delivered) == 4 for x in nodes))
    assert all(x.gossip.metrics().control_bytes_in > 0 for x in nodes)  # sub, graft, ihave frames


async def test_a_large_body_is_announced_and_pulled_once_over_real_sessions(make_node: NodeFactory) -> None:
    nodes = []
    for k in range(4):
        node = await make_node(bootstrap=(nodes[0].url,) if nodes else (), topics=(), start=False)

        async def validate(env: Envelope, node=node) -> Verdict:
            return Verdict.ACCEPT

        async def deliver(env: Envelope, node=node) -> None:
            node.delivered.append(env)

        node.gossip.subscribe(PULLED, validate, deliver, pull=PullRule(1 << 20))
        await node.gossip.start()
        nodes.append(node)
    await wait_until(lambda: all(len(x.gossip.peers()) == 3 for x in nodes))
    body = bytes(range(256)) * 200  # 51,200 bytes: over the 16 KiB pull threshold
    await nodes[0].gossip.publish(PULLED, body)
    await wait_until(lambda: all(x.bodies() == [body] for x in nodes[1:]))
    for node in nodes[1:]:
        topic = node.gossip.metrics().topics[PULLED]
        assert topic.bodies_in == 1 and topic.bytes_in < 2 * len(body)  # the body came once
        assert node.delivered[0].sender == nodes[0].node_id
