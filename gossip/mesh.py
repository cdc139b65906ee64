"""gossipsub v1.1 as a dissemination policy: a mesh per topic, fanout, gossip, peer scoring.

Each topic we subscribe to has a *mesh* of about ``d`` peers (kept within ``[d_low, d_high]`` at
every heartbeat with GRAFT and PRUNE); an accepted message is forwarded to the mesh only, so a
node sends each message ``d`` times instead of once per peer. Messages we publish ourselves go to
every peer above the publish threshold (flood publishing: a publisher's first hop is as wide as
it can be). Topics we publish on without subscribing get a *fanout* set that expires. What a
peer may have missed is offered lazily: every heartbeat, IHAVE with the ids of the message
cache's newest windows goes to a few peers outside the mesh, which IWANT what they lack. Peer
scores (:mod:`gossip.meshscore`) keep negative peers out of the mesh, gossip and publishing, and
graylist the worst. Mesh peers whose copies keep arriving late are choked (:mod:`gossip.choke`;
``d_eager`` of them keep pushing): they announce each message with an immediate IHAVE instead of
pushing it. A message that came straight from its publisher is relayed to every peer outside the
mesh as well (flood publishing one hop further: ``relay``), except peers that choked our relays
because in their part of the network those copies come late (:mod:`gossip.choke`).

While a node has at most ``flood_peers`` connected peers it sends every message to all of them,
the full mesh DESIGN wants for small networks; the mesh is maintained all the same, so a node
whose peer count grows switches over without a gap.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from gossip.choke import Choker
from gossip.codec import DecodeError
from gossip.config import GossipConfig, MeshParams
from gossip.mcache import MessageCache
from gossip.meshscore import MeshScores
from gossip.policy import DisseminationPolicy, FloodPolicy, PolicyIO
from gossip.wire import (
    CHOKE,
    GRAFT,
    IHAVE,
    IWANT,
    PRUNE,
    SUB,
    UNCHOKE,
    ihave_frame,
    iwant_frame,
    parse_ihave,
    parse_iwant,
    parse_prune,
    parse_sub,
    parse_topic_frame,
    prune_frame,
    sub_frame,
    topic_frame,
)


@dataclass
class _Peer:
    ip: str
    outbound: bool
    topics: set[str] = field(default_factory=set)


class GossipSubPolicy:
    def __init__(self, params: MeshParams, rng: random.Random, clock: Callable[[], float]) -> None:
        self.p = params
        self._rng = rng
        self._clock = clock
        self._io: PolicyIO | None = None
        self._peers: dict[str, _Peer] = {}
        self._joined: dict[str, None] = {}
        self.mesh: dict[str, dict[str, None]] = {}
        self.fanout: dict[str, dict[str, None]] = {}
        self._fanout_used: dict[str, float] = {}
        self._backoff: dict[tuple[str, str], float] = {}
        self._pruned_at: dict[tuple[str, str], float] = {}
        self._promises: dict[bytes, tuple[str, float]] = {}
        self._ihaves: Counter[str] = Counter()
        self._asked: Counter[str] = Counter()
        self.cache = MessageCache(params.history_length, params.history_gossip, params.mcache_bytes,
                                  params.max_transmissions)
        self.scores = MeshScores(params.score, clock)
        self.choker = Choker(params.d_eager, params.choke_evidence, params.choke_decay, clock, params.relay_choke_ttl)

    # ------------------------------------------------------------------ peers and topics

    def bind(self, io: PolicyIO) -> None:
        self._io = io

    def _send(self, node_id: str, frame: bytes, topic: str | None = None) -> None:
        assert self._io is not None, "bind() first"
        self._io.send(node_id, frame, topic)

    def add_peer(self, node_id: str, ip: str = "", outbound: bool = False) -> None:
        self._peers[node_id] = _Peer(ip, outbound)
        self.scores.add_peer(node_id, ip)
        if self._joined:
            self._send(node_id, sub_frame(list(self._joined)))

    def remove_peer(self, node_id: str) -> None:
        if self._peers.pop(node_id, None) is None:
            return
        self.scores.remove_peer(node_id)
        for peers in (*self.mesh.values(), *self.fanout.values()):
            peers.pop(node_id, None)
        for topic in self._joined:
            self.choker.left_mesh(topic, node_id)

    def join(self, topic: str) -> None:
        if topic in self._joined:
            return
        self._joined[topic] = None
        self.scores.topics.add(topic)
        self.mesh[topic] = dict.fromkeys(self.fanout.pop(topic, {}))
        self._fanout_used.pop(topic, None)
        for node_id in self._peers:
            self._send(node_id, sub_frame(list(self._joined)))
        for node_id in self.mesh[topic]:
            self._graft(node_id, topic)

    def _subscribers(self, topic: str) -> list[str]:
        return [nid for nid, peer in self._peers.items() if topic in peer.topics]

    @property
    def flooding(self) -> bool:
        return len(self._peers) <= self.p.flood_peers

    # ------------------------------------------------------------------ targets

    def publish_targets(self, topic: str) -> list[str]:
        if self.flooding:
            return list(self._peers)
        threshold = self.p.score.publish_threshold
        if self.p.flood_publish:
            return [nid for nid in self._subscribers(topic) if self.scores.score(nid) >= threshold]
        if topic in self._joined:
            return list(self.mesh[topic])
        self._fanout_used[topic] = self._clock()
        peers = self.fanout.setdefault(topic, {})
        if not peers:
            self._fill(peers, topic, self.p.d, threshold)
        return list(peers)

    def forward_targets(self, topic: str, exclude: set[str], msg_id: bytes, from_publisher: bool = False) -> list[str]:
        """Peers to push to; the ones among them that choked us get an IHAVE for it now instead.
        A message ``from_publisher`` (it came from the peer that signed it) is also relayed."""
        if self.flooding:
            return [nid for nid in self._peers if nid not in exclude]
        mesh = self.mesh.get(topic, {})
        targets = [nid for nid in mesh if nid not in exclude]
        lazy = self.choker.choked_by.get(topic, set())
        for node_id in targets:
            if node_id in lazy:
                self._send(node_id, ihave_frame(topic, [msg_id]))
        eager = [nid for nid in targets if nid not in lazy]
        if from_publisher and self.p.relay:
            now, threshold = self._clock(), self.p.score.publish_threshold
            eager += [nid for nid in self._subscribers(topic) if nid not in mesh and nid not in exclude
                      and self.scores.score(nid) >= threshold and not self.choker.relay_choked(topic, nid, now)]
        return eager

    def _candidates(self, topic: str, taken: dict[str, None], min_score: float) -> list[str]:
        now = self._clock()
        return [nid for nid in self._subscribers(topic) if nid not in taken
                and self._backoff.get((topic, nid), 0.0) <= now and self.scores.score(nid) >= min_score]

    def _fill(self, peers: dict[str, None], topic: str, target: int, min_score: float) -> list[str]:
        """Add random candidates to ``peers`` until it has ``target``; returns the added ones."""
        pool = self._candidates(topic, peers, min_score)
        added = self._rng.sample(pool, min(len(pool), max(0, target - len(peers))))
        peers.update(dict.fromkeys(added))
        return added

    # ------------------------------------------------------------------ messages

    def received(self, msg_id: bytes, node_id: str, topic: str, publisher: str = "") -> None:
        self._promises.pop(msg_id, None)
        self._copy(msg_id, node_id, topic, publisher, True)

    def duplicate(self, msg_id: bytes, node_id: str, topic: str, publisher: str = "") -> None:
        self._copy(msg_id, node_id, topic, publisher, False)

    def _copy(self, msg_id: bytes, node_id: str, topic: str, publisher: str, first: bool) -> None:
        """What a copy tells choking: how late a mesh peer is, or whether a relayer (outside the
        mesh, not the publisher) is worth its copies; one whose copies rarely come first is choked."""
        in_mesh = node_id in self.mesh.get(topic, ())
        (self.choker.first if first else self.choker.duplicate)(msg_id, node_id, topic, in_mesh)
        if (self.p.relay and publisher and node_id != publisher and not in_mesh and not self.flooding
                and topic in self._joined and self.choker.relayed(topic, node_id, first)):
            self._send(node_id, topic_frame(CHOKE, topic))

    def accepted(self, msg_id: bytes, topic: str, frame: bytes, source: str | None) -> None:
        self.cache.put(msg_id, topic, frame)
        if source is not None:
            self.scores.first_delivery(source, topic)

    def invalid(self, node_id: str, topic: str) -> None:
        self.scores.invalid(node_id, topic)

    def graylisted(self, node_id: str) -> bool:
        return self.scores.score(node_id) < self.p.score.graylist_threshold

    def score(self, node_id: str) -> float:
        return self.scores.score(node_id)

    # ------------------------------------------------------------------ control frames

    def on_control(self, node_id: str, frame: list) -> None:
        peer = self._peers.get(node_id)
        if peer is None:
            return
        kind = frame[0]
        if kind == SUB:
            self._on_sub(node_id, peer, parse_sub(frame, self.p.max_topics))
        elif kind == GRAFT:
            self._on_graft(node_id, peer, parse_topic_frame(frame))
        elif kind == PRUNE:
            self._on_prune(node_id, *parse_prune(frame))
        elif kind == IHAVE:
            self._on_ihave(node_id, *parse_ihave(frame, self.p.max_ihave_ids))
        elif kind == IWANT:
            self._on_iwant(node_id, parse_iwant(frame, self.p.max_ihave_ids))
        elif kind in (CHOKE, UNCHOKE):
            self._on_choke(node_id, parse_topic_frame(frame), kind == CHOKE)
        else:
            raise DecodeError(f"not a control frame: {kind[:16]!r}")

    def _on_sub(self, node_id: str, peer: _Peer, topics: list[str]) -> None:
        peer.topics = set(topics)
        for topic, peers in (*self.mesh.items(), *self.fanout.items()):
            if topic not in peer.topics and peers.pop(node_id, 0) is None:
                self.scores.pruned(node_id, topic)
                self.choker.left_mesh(topic, node_id)

    def _on_graft(self, node_id: str, peer: _Peer, topic: str) -> None:
        mesh = self.mesh.get(topic)
        if mesh is None or node_id in mesh:
            return
        now = self._clock()
        if self._backoff.get((topic, node_id), 0.0) > now:
            flood = now - self._pruned_at.get((topic, node_id), float("-inf")) < self.p.graft_flood
            self.scores.misbehaved(node_id, 2.0 if flood else 1.0)
            self._prune(node_id, topic)
        elif self.scores.score(node_id) < 0 or (len(mesh) >= self.p.d_high and not peer.outbound):
            self._prune(node_id, topic)
        else:
            mesh[node_id] = None
            self.scores.grafted(node_id, topic)
            self.choker.left_mesh(topic, node_id)  # a new mesh link starts unchoked both ways

    def _on_prune(self, node_id: str, topic: str, backoff: int) -> None:
        mesh = self.mesh.get(topic)
        if mesh is not None and mesh.pop(node_id, 0) is None:
            self.scores.pruned(node_id, topic)
        self.choker.left_mesh(topic, node_id)
        self._backoff[(topic, node_id)] = self._clock() + max(backoff, self.p.prune_backoff)

    def _on_choke(self, node_id: str, topic: str, choke: bool) -> None:
        """A peer can only choke the link into itself: a mesh peer our pushes, another our relays
        (for ``relay_choke_ttl`` seconds)."""
        in_mesh = node_id in self.mesh.get(topic, ())
        if choke and in_mesh:
            self.choker.choked_by.setdefault(topic, set()).add(node_id)
        elif choke and topic in self._joined:  # we relay only what we subscribe to: bounded state
            self.choker.relay_choked_by[(topic, node_id)] = self._clock() + self.choker.relay_choke_ttl
        else:
            self.choker.choked_by.get(topic, set()).discard(node_id)
            self.choker.relay_choked_by.pop((topic, node_id), None)

    def _on_ihave(self, node_id: str, topic: str, msg_ids: list[bytes]) -> None:
        # A peer we choked announces every message it would have pushed: its IHAVEs are not
        # gossip and are bounded by its frame rate limit, not by the gossip budget.
        if node_id not in self.choker.choking.get(topic, ()):
            self._ihaves[node_id] += 1
        if (self._ihaves[node_id] > self.p.max_ihave_frames or topic not in self._joined
                or self.scores.score(node_id) < self.p.score.gossip_threshold):
            return
        assert self._io is not None
        budget = self.p.max_iwant_ids - self._asked[node_id]
        wanted = [m for m in msg_ids if not self._io.has_seen(m) and m not in self._promises][:max(0, budget)]
        if not wanted:
            return
        self._asked[node_id] += len(wanted)
        deadline = self._clock() + self.p.iwant_followup
        for msg_id in wanted:
            self._promises[msg_id] = (node_id, deadline)
        self._send(node_id, iwant_frame(wanted))

    def _on_iwant(self, node_id: str, msg_ids: list[bytes]) -> None:
        if self.scores.score(node_id) < self.p.score.gossip_threshold:
            return
        for msg_id in msg_ids:
            cached = self.cache.get(msg_id, node_id)
            if cached is not None:
                self._send(node_id, cached[1], cached[0])

    def _graft(self, node_id: str, topic: str) -> None:
        self.scores.grafted(node_id, topic)
        self.choker.left_mesh(topic, node_id)
        self._send(node_id, topic_frame(GRAFT, topic))

    def _prune(self, node_id: str, topic: str) -> None:
        """Tell ``node_id`` it is out of our mesh of ``topic`` (and not to graft for a while)."""
        now = self._clock()
        self.scores.pruned(node_id, topic)
        self.choker.left_mesh(topic, node_id)
        self._backoff[(topic, node_id)] = now + self.p.prune_backoff
        self._pruned_at[(topic, node_id)] = now
        self._send(node_id, prune_frame(topic, self.p.prune_backoff))

    # ------------------------------------------------------------------ heartbeat

    def heartbeat(self) -> None:
        self.scores.heartbeat()
        now = self._clock()
        self._backoff = {k: t for k, t in self._backoff.items() if t > now}
        self._pruned_at = {k: t for k, t in self._pruned_at.items() if now - t < self.p.graft_flood}
        for topic in self._joined:
            self._maintain_mesh(topic)
            if not self.flooding:
                self._choke(topic)
        self.choker.heartbeat(now)
        self._maintain_fanout(now)
        self._emit_gossip()
        self.cache.shift()
        for msg_id, (node_id, deadline) in list(self._promises.items()):
            if deadline <= now:
                del self._promises[msg_id]
                self.scores.misbehaved(node_id)
        self._ihaves.clear()
        self._asked.clear()

    def _maintain_mesh(self, topic: str) -> None:
        p, mesh = self.p, self.mesh[topic]
        for node_id in [nid for nid in mesh if self.scores.score(nid) < 0]:
            del mesh[node_id]
            self._prune(node_id, topic)
        if len(mesh) < p.d_low:
            for node_id in self._fill(mesh, topic, p.d, 0.0):
                self._graft(node_id, topic)
        if len(mesh) > p.d_high:
            self._shrink(mesh, topic)
        outbound = [nid for nid in mesh if self._peers[nid].outbound]
        if len(mesh) >= p.d_low and len(outbound) < p.d_out:
            pool = [nid for nid in self._candidates(topic, mesh, 0.0) if self._peers[nid].outbound]
            for node_id in self._rng.sample(pool, min(len(pool), p.d_out - len(outbound))):
                mesh[node_id] = None
                self._graft(node_id, topic)

    def _choke(self, topic: str) -> None:
        chokes, unchokes = self.choker.decide(topic, self.mesh[topic])
        for node_id in chokes:
            self._send(node_id, topic_frame(CHOKE, topic))
        for node_id in unchokes:
            self._send(node_id, topic_frame(UNCHOKE, topic))

    def _shrink(self, mesh: dict[str, None], topic: str) -> None:
        """Keep the ``d_score`` best-scored peers, at least ``d_out`` outbound ones, and random
        others up to ``d``; prune the rest."""
        p = self.p
        shuffled = self._rng.sample(list(mesh), len(mesh))
        by_score = sorted(shuffled, key=self.scores.score, reverse=True)
        keep = by_score[:p.d_score]
        rest = [nid for nid in shuffled if nid not in keep]
        keep += rest[:p.d - len(keep)]
        short = p.d_out - sum(self._peers[nid].outbound for nid in keep)
        if short > 0:
            spare = [nid for nid in rest if nid not in keep and self._peers[nid].outbound][:short]
            droppable = [nid for nid in reversed(keep[p.d_score:]) if not self._peers[nid].outbound]
            for add, drop in zip(spare, droppable):
                keep[keep.index(drop)] = add
        for node_id in [nid for nid in mesh if nid not in keep]:
            del mesh[node_id]
            self._prune(node_id, topic)

    def _maintain_fanout(self, now: float) -> None:
        threshold = self.p.score.publish_threshold
        for topic in list(self.fanout):
            if now - self._fanout_used.get(topic, now) > self.p.fanout_ttl:
                del self.fanout[topic]
                self._fanout_used.pop(topic, None)
                continue
            peers = self.fanout[topic]
            for node_id in [nid for nid in peers if nid not in self._peers or topic not in self._peers[nid].topics
                            or self.scores.score(nid) < threshold]:
                del peers[node_id]
            self._fill(peers, topic, self.p.d, threshold)

    def _emit_gossip(self) -> None:
        p = self.p
        for topic, msg_ids in self.cache.gossip_ids().items():
            near = {**self.mesh.get(topic, {}), **self.fanout.get(topic, {})}
            pool = [nid for nid in self._subscribers(topic)
                    if nid not in near and self.scores.score(nid) >= p.score.gossip_threshold]
            count = min(len(pool), max(p.d_lazy, int(p.gossip_factor * len(pool))))
            ids = self._rng.sample(msg_ids, min(len(msg_ids), p.max_ihave_ids))
            for node_id in self._rng.sample(pool, count):
                self._send(node_id, ihave_frame(topic, ids))


def make_policy(config: GossipConfig, rng: random.Random, clock: Callable[[], float]) -> DisseminationPolicy:
    """The policy ``config.dissemination`` names."""
    if config.dissemination == "flood":
        return FloodPolicy()
    return GossipSubPolicy(config.mesh, rng, clock)
