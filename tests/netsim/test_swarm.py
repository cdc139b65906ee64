"""gossipsub and announce-then-pull on real gossip stacks over the simulated network: mesh degree
under churn, IHAVE/IWANT recovery, graylisting, pulls (once each; from another announcer when
one withholds the body), choking (fewer duplicates; choked peers still deliver) and relays
(choked where they only add copies, faster where the network is wide). Deterministic: each test
is one seeded run on virtual time."""

from __future__ import annotations

import numpy as np

from gossip.config import MeshParams
from gossip.mesh import GossipSubPolicy
from node.netsim.swarm import PULL, PUSH, Swarm


def tag(name: str) -> bytes:
    return name.encode().ljust(16, b".")


def mesh_of(swarm: Swarm, i: int) -> GossipSubPolicy:
    gossip = swarm.members[i].gossip
    assert gossip is not None and isinstance(gossip.policy, GossipSubPolicy)
    return gossip.policy


def test_mesh_degree_stays_within_bounds_under_churn() -> None:
    swarm = Swarm(40, seed=3)
    checked: list[tuple[int, int, int]] = []  # (node, mesh size, eligible peers) after each heartbeat

    def watch(i: int) -> None:
        policy = mesh_of(swarm, i)
        beat = policy.heartbeat

        def checked_heartbeat() -> None:
            beat()
            eligible = len(policy._candidates(PUSH, {}, 0.0))
            checked.append((i, len(policy.mesh[PUSH]), eligible))

        policy.heartbeat = checked_heartbeat  # type: ignore[method-assign]

    async def scenario() -> None:
        await swarm.start_all()
        for m in swarm.members:
            watch(m.index)
        down: list[int] = []
        for step in range(12):  # every 2 s one node crashes, and one crashed earlier comes back
            await swarm.until(6.0 + 2 * step)
            victim = swarm.rng.choice([m.index for m in swarm.live()])
            await swarm.crash(victim)
            down.append(victim)
            if len(down) > 3:
                back = down.pop(0)
                await swarm.start(back)
                watch(back)
        await swarm.until(32.0)
        await swarm.stop_all()

    swarm.run(scenario())
    settled = [c for c in checked if c[2] >= 4]
    assert len(checked) > 500 and len(settled) > 400
    assert all(size <= 12 for _, size, _ in checked), "a mesh grew past D_high (12)"
    assert all(size >= 4 for _, size, _ in settled), "a mesh with enough peers stayed below D_low (4)"
    assert all(size >= eligible for _, size, eligible in checked if eligible < 4)


def test_ihave_iwant_recovers_a_message_missed_while_down() -> None:
    swarm = Swarm(30, seed=5)

    async def scenario() -> None:
        await swarm.start_all()
        await swarm.until(8.0)
        await swarm.crash(7)
        await swarm.until(8.5)
        await swarm.publish(3, tag("missed"), 1024)
        await swarm.until(9.0)
        others = swarm.arrivals(tag("missed"))
        assert len(others) == 28 and 7 not in others  # everyone else has it: nobody forwards it again
        await swarm.start(7)
        await swarm.until(14.0)
        await swarm.stop_all()

    swarm.run(scenario())
    assert tag("missed") in swarm.members[7].received  # only IHAVE/IWANT could have brought it


def test_a_peer_that_sends_invalid_messages_is_graylisted() -> None:
    swarm = Swarm(20, seed=7)
    bad = 4

    async def scenario() -> None:
        await swarm.start_all()
        await swarm.until(6.0)
        for k in range(12):  # -1 x 12^2 (less some decay): well below the graylist threshold (-80)
            await swarm.publish(bad, b"bad" + bytes([k]) * 13, 512)
            await swarm.until(6.2 + 0.2 * k)
        await swarm.until(10.0)
        neighbours = [m for m in swarm.live() if m.index != bad and m.gossip is not None
                      and swarm.members[bad].keypair.node_id in {p.node_id for p in m.gossip.peers()}]
        assert neighbours
        bad_id = swarm.members[bad].keypair.node_id
        for m in neighbours:
            assert m.gossip is not None
            assert m.gossip.policy.graylisted(bad_id)
            assert bad_id not in m.gossip.banned()  # graylisted, not banned: it costs us nothing now
        before = sum(m.gossip.metrics().drops["graylisted"] for m in neighbours if m.gossip)
        await swarm.publish(bad, tag("after"), 512)
        await swarm.until(12.0)
        after = sum(m.gossip.metrics().drops["graylisted"] for m in neighbours if m.gossip)
        assert after > before
        await swarm.stop_all()

    swarm.run(scenario())
    assert swarm.arrivals(tag("after")) == {}  # every neighbour dropped it unread


def test_a_large_body_is_pulled_once_by_every_node() -> None:
    swarm = Swarm(30, seed=9)

    async def scenario() -> None:
        await swarm.start_all()
        await swarm.until(6.0)
        await swarm.publish(0, tag("big"), 60 * 1024)
        await swarm.until(12.0)
        assert len(swarm.arrivals(tag("big"))) == 29
        for m in swarm.members[1:]:
            assert m.gossip is not None
            metrics = m.gossip.metrics()
            assert metrics.topics[PULL].bodies_in == 1, m.index
            assert metrics.drops["withheld"] == metrics.drops["unsolicited"] == 0
        await swarm.stop_all()

    swarm.run(scenario())


def test_a_withheld_body_is_fetched_from_another_announcer() -> None:
    """P publishes; W, close to P and to V, pulls the body and announces it to V first but never
    serves it; H announces later. V must get the body from H, once."""
    P, W, H, V = range(4)
    fast, slow = 0.005, 0.05
    swarm = Swarm(4, seed=11, latencies={(P, W): fast, (W, V): fast, (P, H): slow, (H, V): slow,
                                         (P, V): 0.3, (W, H): 0.2})
    seen = {}

    async def scenario() -> None:
        await swarm.start_all()
        withholder = swarm.members[W].gossip
        assert withholder is not None
        withholder._router.pulls.on_want = lambda peer, body_id: None  # a hostile peer: never serves
        await swarm.until(5.0)
        await swarm.publish(P, tag("withheld"), 60 * 1024)
        await swarm.until(10.0)
        victim = swarm.members[V].gossip
        assert victim is not None
        seen["metrics"] = victim.metrics()
        await swarm.stop_all()

    swarm.run(scenario())
    arrivals = swarm.arrivals(tag("withheld"))
    assert set(arrivals) == {W, H, V}
    assert arrivals[V] > 6.0  # only after the pull from W timed out (W announced it at ~5.07 s)
    metrics = seen["metrics"]
    assert metrics.drops["withheld"] == 1
    assert metrics.topics[PULL].bodies_in == 1  # from H alone: the body was never received twice


async def traffic(swarm: Swarm, count: int, measured: int, name: str) -> tuple[list[tuple[bytes, float]], float]:
    """Once the meshes formed, ``count`` 1 KB messages from random publishers, one every 250 ms,
    then 2 s to settle: each message's tag and publication time, and the copies per node per
    message beyond the first over the last ``measured`` of them."""
    def copies() -> tuple[int, int]:
        metrics = [m.gossip.metrics() for m in swarm.live() if m.gossip is not None]
        return sum(x.topics[PUSH].msgs_in for x in metrics), sum(x.topics[PUSH].delivered for x in metrics)

    await swarm.start_all()
    await swarm.until(8.0)
    sent: list[tuple[bytes, float]] = []
    before = copies()
    for k in range(count):
        if k == count - measured:
            before = copies()
        t = tag(f"{name}{k}")
        sent.append((t, await swarm.publish(swarm.rng.randrange(len(swarm.members)), t, 1024)))
        await swarm.until(swarm.loop.time() + 0.25)
    await swarm.until(swarm.loop.time() + 2.0)
    after = copies()
    return sent, (after[0] - before[0]) / (after[1] - before[1]) - 1


def _choked_run(d_eager: int) -> dict:
    """Thirty 1 KB messages to warm up, then thirty measured (duplicates per node per message).
    Then every peer of node 0 but the mesh peers it choked goes silent (forwards nothing and
    gossips nothing), and ten more messages are published by nodes that are not its peers."""
    swarm = Swarm(60, seed=13, settings={"mesh": MeshParams(d_eager=d_eager, relay=False), "max_outbound": 8,
                                         "max_inbound": 24})  # choking alone, on a sparser graph
    out: dict = {"firsts": []}

    async def scenario() -> None:
        _, out["duplicates"] = await traffic(swarm, 60, 30, "warm")
        victim = mesh_of(swarm, 0)
        index = {m.keypair.node_id: m.index for m in swarm.members}
        out["choked"] = choked = {index[nid] for nid in victim.choker.choking.get(PUSH, ())}
        for nid in victim._peers:
            if index[nid] not in choked:
                silent = mesh_of(swarm, index[nid])
                silent.forward_targets = lambda *args: []  # type: ignore[method-assign]
                silent._emit_gossip = lambda: None  # type: ignore[method-assign]
        received = victim.received

        def first_from(msg_id: bytes, node_id: str, topic: str, publisher: str = "") -> None:
            if topic == PUSH:
                out["firsts"].append(index[node_id])
            received(msg_id, node_id, topic, publisher)

        victim.received = first_from  # type: ignore[method-assign]
        far = [m.index for m in swarm.members if m.index and m.keypair.node_id not in victim._peers]
        out["published"] = []
        for k in range(10):
            out["published"].append(await swarm.publish(swarm.rng.choice(far), tag(f"late{k}"), 1024))
            await swarm.until(swarm.loop.time() + 0.5)
        await swarm.until(swarm.loop.time() + 3.0)
        out["unchoked"] = {index[nid] for nid in victim.mesh[PUSH]} - {
            index[nid] for nid in victim.choker.choking.get(PUSH, ())}
        await swarm.stop_all()

    swarm.run(scenario())
    out["late"] = [swarm.members[0].received.get(tag(f"late{k}"), float("inf")) - out["published"][k]
                   for k in range(10)]
    return out


def test_choking_cuts_duplicates_and_choked_peers_still_deliver_what_the_eager_ones_withhold() -> None:
    plain, choked = _choked_run(0), _choked_run(3)
    assert plain["duplicates"] > 3.5 and choked["duplicates"] < 0.75 * plain["duplicates"]
    assert choked["choked"]
    # Only the choked peers could bring the last ten (an immediate IHAVE, then our IWANT): all
    # came, each within a second (heartbeat gossip alone would take longer), and their
    # deliverers were unchoked for it.
    assert max(choked["late"]) < 1.0, choked["late"]
    assert set(choked["firsts"]) <= choked["choked"]
    assert choked["unchoked"] & choked["choked"]


def _relay_run(n: int, relay: bool) -> dict:
    """Forty 1 KB messages from random publishers, one every 250 ms after the mesh formed; the
    last twenty measured: duplicates per node per message, delivery p99, relay chokes sent."""
    swarm = Swarm(n, seed=5, settings={"mesh": MeshParams(relay=relay)})
    out: dict = {}

    async def scenario() -> None:
        out["sent"], out["duplicates"] = await traffic(swarm, 40, 20, "relay")
        out["relay_chokes"] = sum(len(mesh_of(swarm, m.index).choker._relay_choking) for m in swarm.live())
        await swarm.stop_all()

    swarm.run(scenario())
    late = [arrival - at for t, at in out["sent"][20:] for arrival in swarm.arrivals(t).values()]
    out["p99"] = float(np.percentile(late, 99))
    return out


def test_relays_are_choked_where_the_publisher_reaches_everyone_itself() -> None:
    """Forty nodes with the default connection slots are about one hop apart: the copies a
    relay adds arrive after the publisher's own, so receivers choke them and amplification stays
    near the mesh's alone. Two hundred nodes are farther apart, and relays shorten delivery there."""
    small_on, small_off = _relay_run(40, True), _relay_run(40, False)
    assert small_on["relay_chokes"] > 0
    assert small_on["duplicates"] < 1.25 * small_off["duplicates"], (small_on, small_off)
    large_on, large_off = _relay_run(200, True), _relay_run(200, False)
    assert large_on["p99"] < 0.9 * large_off["p99"], (large_on, large_off)
