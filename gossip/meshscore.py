"""Peer scores of gossipsub v1.1, which steer the mesh and gossip (and graylist bad peers).

Separate from :mod:`gossip.score` (penalties that end in a ban): this score also rewards, with
caps, what an honest mesh peer does, so the mesh prefers peers that have been useful for a while
and sheds ones that are not. Terms, per topic we subscribe to, then summed:

* P1 time in our mesh (capped), P2 messages the peer delivered to us first (decaying, capped);
* P4 invalid messages (bad signature, or the topic validator said REJECT), squared;

and per peer: P6 IP colocation (peers beyond a threshold on one address, squared) and P7
behaviour (a graft during its backoff, an IWANT promise not kept), squared above a threshold.
P3 (mesh delivery deficits) is left out: consensus traffic comes in bursts at slot boundaries,
so a per-heartbeat delivery quota would punish honest peers in quiet heartbeats.

Scores are cached and recomputed at each heartbeat (when counters decay) and at once for a peer
that was just penalised, so a graylisted peer is cut off by its very next frame.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from gossip.config import ScoreParams

RETAIN_SECONDS = 300.0
"""A disconnected peer's counters are kept this long, so reconnecting does not wipe a bad score."""


@dataclass
class _Topic:
    mesh_since: float | None = None
    first_deliveries: float = 0.0
    invalid: float = 0.0


@dataclass
class _Peer:
    ip: str
    topics: dict[str, _Topic] = field(default_factory=dict)
    behaviour: float = 0.0
    gone_at: float | None = None


class MeshScores:
    def __init__(self, params: ScoreParams, clock: Callable[[], float]) -> None:
        self.p = params
        self._clock = clock
        self._peers: dict[str, _Peer] = {}
        self._by_ip: Counter[str] = Counter()
        self._cache: dict[str, float] = {}
        self.topics: set[str] = set()
        """Topics we subscribe to: only these earn or lose P1, P2 and P4."""

    def add_peer(self, node_id: str, ip: str) -> None:
        peer = self._peers.get(node_id)
        if peer is None or peer.ip != ip:
            peer = self._peers[node_id] = _Peer(ip, peer.topics if peer else {}, peer.behaviour if peer else 0.0)
        peer.gone_at = None
        if ip not in self.p.colocation_exempt:
            self._by_ip[ip] += 1
            for other, info in self._peers.items():
                if info.ip == ip and info.gone_at is None:
                    self._refresh(other)
        self._refresh(node_id)

    def remove_peer(self, node_id: str) -> None:
        peer = self._peers.get(node_id)
        if peer is None or peer.gone_at is not None:
            return
        peer.gone_at = self._clock()
        for stats in peer.topics.values():
            stats.mesh_since = None
        if peer.ip not in self.p.colocation_exempt:
            self._by_ip[peer.ip] -= 1
            if not self._by_ip[peer.ip]:
                del self._by_ip[peer.ip]

    def _topic(self, node_id: str, topic: str) -> _Topic | None:
        peer = self._peers.get(node_id)
        if peer is None or topic not in self.topics:
            return None
        return peer.topics.setdefault(topic, _Topic())

    def grafted(self, node_id: str, topic: str) -> None:
        stats = self._topic(node_id, topic)
        if stats is not None and stats.mesh_since is None:
            stats.mesh_since = self._clock()

    def pruned(self, node_id: str, topic: str) -> None:
        stats = self._topic(node_id, topic)
        if stats is not None:
            stats.mesh_since = None

    def first_delivery(self, node_id: str, topic: str) -> None:
        stats = self._topic(node_id, topic)
        if stats is not None:
            stats.first_deliveries = min(self.p.first_delivery_cap, stats.first_deliveries + 1)

    def invalid(self, node_id: str, topic: str) -> None:
        stats = self._topic(node_id, topic)
        if stats is not None:
            stats.invalid += 1
            self._refresh(node_id)

    def misbehaved(self, node_id: str, amount: float = 1.0) -> None:
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.behaviour += amount
            self._refresh(node_id)

    def score(self, node_id: str) -> float:
        return self._cache.get(node_id, 0.0)

    def _compute(self, node_id: str) -> float:
        p, peer, now = self.p, self._peers[node_id], self._clock()
        total = 0.0
        for stats in peer.topics.values():
            if stats.mesh_since is not None:
                total += p.time_in_mesh_weight * min(p.time_in_mesh_cap,
                                                     (now - stats.mesh_since) / p.time_in_mesh_quantum)
            total += p.first_delivery_weight * stats.first_deliveries
            total += p.invalid_weight * stats.invalid ** 2
        surplus = self._by_ip.get(peer.ip, 0) - p.colocation_threshold
        if surplus > 0:
            total += p.colocation_weight * surplus ** 2
        excess = peer.behaviour - p.behaviour_threshold
        if excess > 0:
            total += p.behaviour_weight * excess ** 2
        return total

    def _refresh(self, node_id: str) -> None:
        self._cache[node_id] = self._compute(node_id)

    def heartbeat(self) -> None:
        """Decay every counter, forget long-gone peers, recompute every score."""
        p, now = self.p, self._clock()
        for node_id in list(self._peers):
            peer = self._peers[node_id]
            if peer.gone_at is not None and now - peer.gone_at > RETAIN_SECONDS:
                del self._peers[node_id]
                self._cache.pop(node_id, None)
                continue
            for stats in peer.topics.values():
                stats.first_deliveries = _decayed(stats.first_deliveries * p.first_delivery_decay)
                stats.invalid = _decayed(stats.invalid * p.invalid_decay)
            peer.behaviour = _decayed(peer.behaviour * p.behaviour_decay)
            self._refresh(node_id)


def _decayed(value: float) -> float:
    """Counters this small are zero (so idle peers' entries do not linger as 1e-300)."""
    return value if value > 0.01 else 0.0
