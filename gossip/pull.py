"""Announce-then-pull: large bodies travel once per node, fetched by id from a peer that has them.

A body of ``pull_threshold`` bytes or more, on a topic subscribed for pulling (:class:`PullRule`),
is not pushed to the mesh: its publisher signs an :class:`~gossip.envelope.Announcement`
``(topic, sender, seq, body_id = sha256(body), size)``, which travels like any message. A node
that receives one (and whose ``screen`` lets it through) asks the announcing peer for the body
(``want``); the answer (``body``) must hash to ``body_id``, so nobody can substitute another.
Only then does the topic validator see the body, and only an accepted body's announcement is
forwarded, by a node that can now serve it. Every other peer that announces the same message
is remembered: if the peer asked does not answer within ``pull_timeout + size / pull_rate``
(it withholds the body, is slow, or left), the next announcer is asked. So each node receives
each body once, from one peer, unless a peer fails it.

Bodies are kept in a :class:`BodyCache` to serve others: bounded in bytes (the publisher holding
the most bytes loses its oldest body first) and in time; a body is sent to one peer at most
``serves_per_body`` times, so a cheap ``want`` cannot make us send the same large body forever.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gossip.config import GossipConfig
from gossip.crypto import sha256
from gossip.envelope import Announcement, Verdict
from gossip.peer import Peer
from gossip.wire import body_frame, want_frame

Screen = Callable[[str, int], Verdict]
"""``(sender, size) -> Verdict``: whether an announced body is worth pulling at all."""


@dataclass(frozen=True)
class PullRule:
    """A topic whose large bodies are announced and pulled. ``max_body`` bounds what an
    announcement may promise; ``screen`` (optional) judges the sender and size before anything
    is fetched: REJECT costs the announcing peer as a rejected message does, IGNORE drops."""

    max_body: int
    screen: Screen | None = None


@dataclass
class Pull:
    """A body being fetched for one announcement."""

    ann: Announcement
    msg_id: bytes
    frame: bytes
    """The announcement frame, forwarded once the body is accepted."""
    announcers: dict[str, None]
    asked: dict[str, None] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Body:
    topic: str
    sender: str
    body: bytes
    expires: float
    served: Counter[str] = field(default_factory=Counter)


class BodyCache:
    """Bodies by id, bounded in bytes and time; the heaviest publisher's oldest go first."""

    def __init__(self, max_bytes: int, ttl: float, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self._bodies: OrderedDict[bytes, _Body] = OrderedDict()
        self._by_sender: dict[str, OrderedDict[bytes, None]] = {}
        self._bytes: Counter[str] = Counter()
        self.nbytes = 0

    def put(self, body_id: bytes, topic: str, sender: str, body: bytes) -> None:
        if body_id in self._bodies or len(body) > self.max_bytes:
            return
        self.purge()
        while self.nbytes + len(body) > self.max_bytes:
            heaviest = max(self._bytes, key=self._bytes.__getitem__)
            self._drop(next(iter(self._by_sender[heaviest])))
        self._bodies[body_id] = _Body(topic, sender, body, self._clock() + self.ttl)
        self._by_sender.setdefault(sender, OrderedDict())[body_id] = None
        self._bytes[sender] += len(body)
        self.nbytes += len(body)

    def get(self, body_id: bytes) -> _Body | None:
        entry = self._bodies.get(body_id)
        return entry if entry is not None and entry.expires > self._clock() else None

    def _drop(self, body_id: bytes) -> None:
        entry = self._bodies.pop(body_id)
        del self._by_sender[entry.sender][body_id]
        self._bytes[entry.sender] -= len(entry.body)
        self.nbytes -= len(entry.body)
        if not self._by_sender[entry.sender]:
            del self._by_sender[entry.sender], self._bytes[entry.sender]

    def purge(self) -> None:
        now = self._clock()
        while self._bodies:
            body_id, entry = next(iter(self._bodies.items()))
            if entry.expires > now:
                break
            self._drop(body_id)

    def __contains__(self, body_id: bytes) -> bool:
        return self.get(body_id) is not None

    def __len__(self) -> int:
        return len(self._bodies)


class PullHooks(Protocol):
    def pulled(self, peer: Peer, pull: Pull, body: bytes) -> None:
        """``body`` hashes to the announced id: hand it to the topic validator."""

    def pull_failed(self, pull: Pull) -> None:
        """No announcer served the body: forget the announcement so it can come again."""

    def on_drop(self, peer: Peer | None, reason: str) -> None: ...


class Puller:
    """The pulls in flight and the bodies we can serve, for one node."""

    def __init__(self, config: GossipConfig, clock: Callable[[], float], peers: dict[str, Peer],
                 hooks: PullHooks) -> None:
        self.config = config
        self.bodies = BodyCache(config.body_cache_bytes, config.body_ttl, clock)
        self.pending: dict[bytes, Pull] = {}
        self._finished: OrderedDict[bytes, tuple[str, dict[str, None]]] = OrderedDict()
        """Topic and peers asked of recently finished pulls: a late answer from one is no offence."""
        self._peers = peers
        self._hooks = hooks

    def start(self, peer: Peer, ann: Announcement, msg_id: bytes, frame: bytes) -> bool:
        """Fetch the body of a new announcement from ``peer``; False if too many are in flight."""
        if ann.body_id in self.pending:
            self.pending[ann.body_id].announcers[peer.node_id] = None
            return True
        if len(self.pending) >= self.config.max_pulls:
            return False
        pull = Pull(ann, msg_id, frame, {peer.node_id: None})
        self.pending[ann.body_id] = pull
        cached = self.bodies.get(ann.body_id)
        if cached is not None:  # the same body under another announcement: no need to fetch
            del self.pending[ann.body_id]
            self._hooks.pulled(peer, pull, cached.body)
        else:
            self._ask_next(pull)
        return True

    def announced_too(self, body_id: bytes, node_id: str) -> None:
        """Another peer announced a body we are fetching: a fallback if the first fails."""
        pull = self.pending.get(body_id)
        if pull is not None:
            pull.announcers[node_id] = None

    def _ask_next(self, pull: Pull) -> None:
        node_id = next((nid for nid in pull.announcers if nid not in pull.asked and nid in self._peers), None)
        if node_id is None:  # every connected announcer failed us: forget it until announced again
            pull.timer = None
            self._give_up(pull)
            return
        pull.asked[node_id] = None
        self._peers[node_id].send(want_frame(pull.ann.body_id))
        timeout = self.config.pull_timeout + pull.ann.size / self.config.pull_rate
        pull.timer = asyncio.get_running_loop().call_later(timeout, self._timed_out, pull)

    def _timed_out(self, pull: Pull) -> None:
        if self.pending.get(pull.ann.body_id) is pull:
            self._hooks.on_drop(None, "withheld")
            self._ask_next(pull)

    def _give_up(self, pull: Pull) -> None:
        del self.pending[pull.ann.body_id]
        self._remember(pull)
        self._hooks.pull_failed(pull)

    def _remember(self, pull: Pull) -> None:
        self._finished[pull.ann.body_id] = (pull.ann.topic, pull.asked)
        while len(self._finished) > 4 * self.config.max_pulls:
            self._finished.popitem(last=False)

    def on_body(self, peer: Peer, body_id: bytes, body: bytes) -> None:
        pull = self.pending.get(body_id)
        if pull is None or peer.node_id not in pull.asked:
            late = peer.node_id in self._finished.get(body_id, ("", {}))[1]
            self._hooks.on_drop(peer, "duplicate" if late else "unsolicited")
            return
        if len(body) != pull.ann.size or sha256(body) != body_id:
            self._hooks.on_drop(peer, "unsolicited")
            pull.announcers.pop(peer.node_id, None)
        else:
            del self.pending[body_id]
            self._remember(pull)
            if pull.timer is not None:
                pull.timer.cancel()
            self._hooks.pulled(peer, pull, body)
            return
        if pull.timer is not None:
            pull.timer.cancel()
        self._ask_next(pull)

    def topic_of(self, body_id: bytes) -> str | None:
        """The topic of a body being pulled or pulled lately (None: we never asked for it)."""
        pull = self.pending.get(body_id)
        if pull is not None:
            return pull.ann.topic
        finished = self._finished.get(body_id)
        return finished[0] if finished is not None else None

    def on_want(self, peer: Peer, body_id: bytes) -> None:
        entry = self.bodies.get(body_id)
        if entry is None or entry.served[peer.node_id] >= self.config.serves_per_body:
            return
        entry.served[peer.node_id] += 1
        peer.send(body_frame(body_id, entry.body), entry.topic)

    def peer_gone(self, node_id: str) -> None:
        """A peer left: pulls it was asked for move on to the next announcer at once."""
        for pull in list(self.pending.values()):
            if next(reversed(pull.asked), None) == node_id and pull.timer is not None:
                pull.timer.cancel()
                self._ask_next(pull)

    def close(self) -> None:
        for pull in self.pending.values():
            if pull.timer is not None:
                pull.timer.cancel()
        self.pending.clear()
