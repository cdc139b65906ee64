"""Probe messages that measure dissemination: how long each takes to reach each node, and how
many copies each node receives.

Two topics every simulated node subscribes to, with validators that accept and record: a pushed
one for small messages (votes and transactions are a few hundred bytes to 1 KB) and a pulled one
for large bodies (model updates are 20 to 200 KB), which travel by announce-then-pull. A probe's
body starts with its number, so a delivery names its probe whatever path it took.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gossip import Envelope, Gossip, Verdict
from gossip.pull import PullRule

PUSH_TOPIC = "sim/probe"
PULL_TOPIC = "sim/bulk"
MAX_BODY = 1 << 20


@dataclass
class Probes:
    clock: Callable[[], float]
    published: dict[int, tuple[float, int, int, str]] = field(default_factory=dict)
    """probe number -> (virtual time, size, publisher index, topic)."""
    deliveries: dict[int, dict[int, float]] = field(default_factory=dict)
    """probe number -> node index -> latency (seconds)."""

    def attach(self, index: int, gossip: Gossip) -> None:
        async def validate(env: Envelope) -> Verdict:
            probe = int.from_bytes(env.body[:8], "big")
            sent = self.published.get(probe)
            if sent is None:
                return Verdict.REJECT
            self.deliveries.setdefault(probe, {}).setdefault(index, self.clock() - sent[0])
            return Verdict.ACCEPT

        async def deliver(env: Envelope) -> None:
            """Recorded on validation: the moment the node could act on it."""

        gossip.subscribe(PUSH_TOPIC, validate, deliver)
        gossip.subscribe(PULL_TOPIC, validate, deliver, pull=PullRule(MAX_BODY))

    async def publish(self, index: int, gossip: Gossip, size: int) -> int:
        probe = len(self.published)
        topic = PULL_TOPIC if size >= gossip.config.pull_threshold else PUSH_TOPIC
        self.published[probe] = (self.clock(), size, index, topic)
        await gossip.publish(topic, probe.to_bytes(8, "big") + bytes(max(0, size - 8)))
        return probe
