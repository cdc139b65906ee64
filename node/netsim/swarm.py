"""A swarm of gossip-only nodes on the simulated network: dissemination without a chain.

Each node is a real :class:`gossip.service.Gossip` (handshake, sessions, router, policy), with
one pushed topic and one pulled topic whose validators accept everything except bodies starting
with ``b"bad"`` (REJECT), and record when each message arrived. Cheaper than full node stacks,
so dissemination can be measured on 1,000 nodes at once and tested node by node (meshes,
IHAVE/IWANT, pulls, graylisting).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from gossip import Envelope, Gossip, GossipConfig, Verdict
from gossip.crypto import KeyPair
from gossip.pull import PullRule
from node.netsim.loop import VirtualTimeLoop
from node.netsim.network import LinkParams, Network
from node.netsim.node import SimClock, node_ip

PUSH = "swarm/push"
PULL = "swarm/pull"
CHAIN_ID = "netsim-swarm"


@dataclass
class Member:
    index: int
    keypair: KeyPair
    url: str
    ip: str
    bootstrap: list[str]
    gossip: Gossip | None = None
    received: dict[bytes, float] = field(default_factory=dict)
    """First arrival (virtual s) of each message body's first 16 bytes."""
    incarnation: int = 0


class Swarm:
    def __init__(self, n: int, seed: int, *, link: LinkParams | None = None, bootstrap: int = 3,
                 settings: dict[str, Any] | None = None, latencies: dict[tuple[int, int], float] | None = None,
                 loop: VirtualTimeLoop | None = None) -> None:
        self._owns_loop = loop is None
        self.loop = loop or VirtualTimeLoop()
        self.seed = seed
        self.rng = random.Random(f"swarm:{seed}")
        self.clock = SimClock(self.loop)
        fixed = {tuple(sorted((node_ip(a), node_ip(b)))): v for (a, b), v in (latencies or {}).items()}
        self.net = Network(self.loop, seed, link or LinkParams(), fixed)
        self.settings = settings or {}
        self.members = []
        for i in range(n):
            others = [j for j in range(n) if j != i]
            peers = self.rng.sample(others, min(bootstrap, len(others)))
            key = KeyPair.from_seed(hashlib.sha256(f"swarm:{seed}:{i}".encode()).digest())
            self.members.append(Member(i, key, f"http://{node_ip(i)}:26657", node_ip(i),
                                       [f"http://{node_ip(j)}:26657" for j in peers]))

    # ------------------------------------------------------------------ lifecycle

    async def start(self, i: int, topics: tuple[str, ...] = (PUSH, PULL)) -> Gossip:
        m = self.members[i]
        m.incarnation += 1
        rng = random.Random(f"swarm:{self.seed}:{i}:{m.incarnation}")
        config = GossipConfig(chain_id=CHAIN_ID, listen_url=m.url, bootstrap=list(m.bootstrap), dial_scope="local",
                              **self.settings)
        m.gossip = Gossip(m.keypair, config, transport=self.net.dialer(m.ip), clock=self.clock, rng=rng)
        for topic in topics:
            self.subscribe(i, topic)
        self.net.listen(m.url, m.ip, m.gossip)
        await m.gossip.start()
        return m.gossip

    def subscribe(self, i: int, topic: str) -> None:
        m = self.members[i]
        assert m.gossip is not None

        async def validate(env: Envelope) -> Verdict:
            if env.body.startswith(b"bad"):
                return Verdict.REJECT
            m.received.setdefault(env.body[:16], self.loop.time())
            return Verdict.ACCEPT

        async def deliver(env: Envelope) -> None:
            """Recorded on validation."""

        m.gossip.subscribe(topic, validate, deliver, PullRule(1 << 22) if topic == PULL else None)

    async def start_all(self, spread_s: float = 1.0) -> None:
        offsets = sorted((self.rng.uniform(0, spread_s), i) for i in range(len(self.members)))
        for offset, i in offsets:
            await asyncio.sleep(max(0.0, offset - self.loop.time()))
            await self.start(i)

    async def crash(self, i: int) -> None:
        m = self.members[i]
        self.net.crash(m.url)
        if m.gossip is not None:
            await m.gossip.stop()
            m.gossip = None

    async def stop_all(self) -> None:
        for m in self.members:
            if m.gossip is not None:
                await self.crash(m.index)

    def run(self, coro: Any) -> Any:
        """Run a scenario to its end. A swarm runs one: the loop it made is closed afterwards
        (left to the garbage collector, it would warn in whatever test runs then)."""
        try:
            return self.loop.run_until_complete(coro)
        finally:
            if self._owns_loop:
                self.loop.close()

    async def until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - self.loop.time()))

    # ------------------------------------------------------------------ traffic

    async def publish(self, i: int, tag: bytes, size: int) -> float:
        """Node ``i`` publishes a body of ``size`` bytes starting with the 16-byte ``tag`` (on
        the pulled topic if it is large enough to be pulled); returns the virtual time."""
        g = self.members[i].gossip
        assert g is not None and len(tag) == 16
        topic = PULL if size >= g.config.pull_threshold else PUSH
        await g.publish(topic, tag + bytes(max(0, size - 16)))
        return self.loop.time()

    def arrivals(self, tag: bytes) -> dict[int, float]:
        return {m.index: m.received[tag] for m in self.members if tag in m.received}

    def live(self) -> list[Member]:
        return [m for m in self.members if m.gossip is not None]
