"""The gossipsub policy on its own: when it floods, grafts and prunes, IHAVE/IWANT, promises."""

from __future__ import annotations

import random

from gossip.codec import unpack
from gossip.config import MeshParams
from gossip.mesh import GossipSubPolicy
from gossip.wire import GRAFT, ihave_frame, iwant_frame, sub_frame, topic_frame


class IO:
    """What the router would do with the policy's frames: record them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.seen_ids: set[bytes] = set()

    def send(self, node_id: str, frame: bytes, topic: str | None = None) -> None:
        self.sent.append((node_id, frame))

    def has_seen(self, msg_id: bytes) -> bool:
        return msg_id in self.seen_ids

    def kinds(self, node_id: str) -> list[str]:
        return [unpack(f)[0] for nid, f in self.sent if nid == node_id]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def policy(peers: int, **params: object) -> tuple[GossipSubPolicy, IO, Clock]:
    clock = Clock()
    p = GossipSubPolicy(MeshParams(**params), random.Random(1), clock)  # type: ignore[arg-type]
    io = IO()
    p.bind(io)
    p.join("t")
    for i in range(peers):
        p.add_peer(f"p{i}", f"10.0.0.{i}", outbound=i % 2 == 0)
        p.on_control(f"p{i}", unpack(sub_frame(["t"])))
    return p, io, clock


def test_up_to_eight_peers_every_message_goes_to_all_beyond_only_to_the_mesh() -> None:
    small, _, _ = policy(8)
    small.heartbeat()
    assert small.forward_targets("t", {"p0"}, b"m" * 32) == [f"p{i}" for i in range(1, 8)]
    big, _, _ = policy(20)
    big.heartbeat()
    mesh = big.forward_targets("t", set(), b"m" * 32)
    assert len(mesh) == 6 and set(mesh) == set(big.mesh["t"])
    assert len(big.publish_targets("t")) == 20  # our own messages: flood publishing


def test_graft_during_backoff_is_refused_and_costs_the_peer() -> None:
    p, io, clock = policy(20)
    p.heartbeat()
    member = next(iter(p.mesh["t"]))
    p.on_control(member, ["prune", "t", 60])
    assert member not in p.mesh["t"]
    for _ in range(3):
        p.on_control(member, unpack(topic_frame(GRAFT, "t")))  # within its own backoff: refused each time
    assert member not in p.mesh["t"] and io.kinds(member).count("prune") == 3
    assert p.score(member) < 0
    clock.now += 61
    outsider = next(f"p{i}" for i in range(20) if f"p{i}" not in p.mesh["t"] and f"p{i}" != member)
    p.on_control(outsider, unpack(topic_frame(GRAFT, "t")))
    assert outsider in p.mesh["t"]


def test_ihave_asks_for_what_is_missing_and_iwant_is_served_a_bounded_number_of_times() -> None:
    p, io, clock = policy(20, max_transmissions=2)
    old, new = b"o" * 32, b"n" * 32
    io.seen_ids.add(old)
    p.on_control("p1", unpack(ihave_frame("t", [old, new])))
    assert ("p1", iwant_frame([new])) in io.sent
    p.received(new, "p1", "t")  # the promise is kept: no penalty later
    p.accepted(new, "t", b"cached frame", "p3")
    for _ in range(3):
        p.on_control("p2", unpack(iwant_frame([new])))
    assert [f for nid, f in io.sent if nid == "p2" and f == b"cached frame"] == [b"cached frame"] * 2  # at most 2
    clock.now += 10
    p.heartbeat()
    assert p.score("p1") >= 0


def test_a_broken_iwant_promise_costs_the_peer() -> None:
    p, io, clock = policy(20)
    for k in range(4):
        p.on_control("p5", unpack(ihave_frame("t", [bytes([k]) * 32])))
    clock.now += 4
    p.heartbeat()
    assert p.score("p5") < 0  # four promises broken: past the behaviour threshold of 2
