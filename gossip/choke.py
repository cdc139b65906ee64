"""Choking: a mesh peer whose copies keep arriving late is asked to announce, not push.

Every mesh link carries each message once in each direction, except the links the message
actually travelled, so with a mesh of degree ``d`` a node receives about ``d - 1`` copies of
everything, most of them duplicates. The mesh is that wide for robustness (many paths around a
slow or hostile peer), not for speed: the first copy usually comes over the same few fast links.
So each node watches, per topic, how late each mesh peer's copies arrive after the first one,
and sends ``choke`` to the latest peers while more than ``d_eager`` stay unchoked. A choked peer
stays in the mesh but sends only the message id (``ihave``, at once) instead of the message; we
``iwant`` what we have not yet seen, so a path through it still works, one round trip slower.
A choked peer that delivers first (its ``ihave`` beat every pushed copy) is unchoked.

Only copies that passed the signature check count, so a stranger cannot fake being fast; a
peer can only choke the links into itself, so the worst a liar does with ``choke`` is take
itself off our eager list. A mesh peer that sends nothing is never judged (it has no delays to
average) and keeps its eager place: a silent peer costs latency (what it withholds comes from a
choked peer's IHAVE, a round trip later), not delivery. The idea is gossipsub's episub proposal
(CHOKE/UNCHOKE); whom to choke is decided here by the mean delay of a peer's copies behind the
first, decayed each heartbeat (measured against choking the peers that send the fewest copies
and against choking by the lead a peer's first copies had: see ``docs/decisions.md``).

Relays are judged the same way. A peer outside the mesh that got a message straight from its
publisher relays it to us (:class:`gossip.config.MeshParams`, ``relay``): in a large network
that copy is often the first, in a small one the publisher reached us itself and it never is.
So we choke a relaying peer whose copies have rarely come first; the choke lapses at the relayer
after ``relay_choke_ttl`` seconds, and one more copy that comes late renews it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

FIRST_SEEN_MAX = 65536
"""First-arrival times remembered per generation (two generations, rotated each heartbeat): a
duplicate comes within a few hundred milliseconds of the first copy, so this only bounds memory."""


@dataclass
class _Link:
    """What one mesh peer delivered on one topic recently (decaying counts)."""

    copies: float = 0.0
    delay: float = 0.0
    """Sum of seconds its copies arrived behind the first (0 for the first itself)."""
    firsts: float = 0.0
    """Copies that were the first (for a choked peer: answers to our IWANT that beat every push)."""


RELAY_FIRST_SHARE = 0.25
"""A relaying peer whose copies came first less often than this (moving average) is choked."""
RELAY_MEMORY = 0.25
"""Weight of the newest copy in that moving average."""


@dataclass
class _Relay:
    """The copies one peer outside the mesh relayed to us on one topic."""

    copies: int = 0
    first_share: float = 0.5
    """Moving average of "this copy came first" (a new relayer is presumed useful)."""


class Choker:
    """Per topic: each mesh peer's delivery record, whom we choke, and who chokes us."""

    def __init__(self, d_eager: int, evidence: float, decay: float, clock: Callable[[], float],
                 relay_choke_ttl: float) -> None:
        self.d_eager = d_eager
        """Unchoked mesh peers kept per topic; 0 turns choking off."""
        self.evidence = evidence
        """Copies a peer must have delivered (decayed) before its delay is judged."""
        self.decay = decay
        self.relay_choke_ttl = relay_choke_ttl
        """Seconds a relayer keeps our choke of its relays (``MeshParams.relay_choke_ttl``)."""
        self._clock = clock
        self._links: dict[tuple[str, str], _Link] = {}
        self.choking: dict[str, set[str]] = {}
        """Per topic, mesh peers we told to announce instead of push."""
        self.choked_by: dict[str, set[str]] = {}
        """Per topic, peers that told us to announce instead of push."""
        self._first: dict[bytes, float] = {}
        self._older: dict[bytes, float] = {}
        self._relays: dict[tuple[str, str], _Relay] = {}
        self.relay_choked_by: dict[tuple[str, str], float] = {}
        """(topic, peer outside the mesh) -> when its choke of our relays lapses."""
        self._relay_choking: dict[tuple[str, str], float] = {}
        """(topic, relaying peer) -> when our choke of it lapses there (no second choke before)."""

    @property
    def enabled(self) -> bool:
        return self.d_eager > 0

    # ------------------------------------------------------------------ arrivals

    def first(self, msg_id: bytes, node_id: str, topic: str, in_mesh: bool) -> None:
        """The first copy of ``msg_id`` came from ``node_id``."""
        if not self.enabled:
            return
        if len(self._first) < FIRST_SEEN_MAX:
            self._first[msg_id] = self._clock()
        if in_mesh:
            link = self._links.setdefault((topic, node_id), _Link())
            link.copies += 1
            link.firsts += 1

    def duplicate(self, msg_id: bytes, node_id: str, topic: str, in_mesh: bool) -> None:
        """Another copy of ``msg_id`` came from ``node_id``."""
        if not (self.enabled and in_mesh):
            return
        at = self._first.get(msg_id)
        if at is None:
            at = self._older.get(msg_id)
        if at is None:
            return  # our own message, or one too old to say how late this copy is
        link = self._links.setdefault((topic, node_id), _Link())
        link.copies += 1
        link.delay += self._clock() - at

    def relayed(self, topic: str, node_id: str, first: bool) -> bool:
        """A copy relayed to us by ``node_id`` (outside the mesh, not the message's publisher)
        came, ``first`` or not; True if that peer should now be choked."""
        if not self.enabled:
            return False
        key, now = (topic, node_id), self._clock()
        link = self._relays.setdefault(key, _Relay())
        link.copies += 1
        link.first_share += (float(first) - link.first_share) * RELAY_MEMORY
        if first or link.copies < self.evidence or link.first_share >= RELAY_FIRST_SHARE:
            return False
        if self._relay_choking.get(key, 0.0) > now:
            return False  # choked already; a relayer that goes on anyway is not worth a frame a copy
        self._relay_choking[key] = now + self.relay_choke_ttl
        return True

    def relay_choked(self, topic: str, node_id: str, now: float) -> bool:
        """Did ``node_id`` choke our relays on ``topic``, and does that still hold?"""
        return self.relay_choked_by.get((topic, node_id), 0.0) > now

    # ------------------------------------------------------------------ decisions

    def decide(self, topic: str, mesh: Iterable[str]) -> tuple[list[str], list[str]]:
        """Whom to choke or unchoke on ``topic`` now: at most one change a heartbeat, unchoking first."""
        if not self.enabled:
            return [], []
        members = sorted(mesh)
        choking = self.choking.setdefault(topic, set())
        choking.intersection_update(members)
        unchoked = [nid for nid in members if nid not in choking]
        # A choked peer that delivered first, or too few unchoked left: unchoke the quickest.
        back = sorted((nid for nid in choking if self._link(topic, nid).firsts >= 1.0
                       or len(unchoked) < self.d_eager), key=lambda nid: (-self._link(topic, nid).firsts, nid))
        if back:
            choking.discard(back[0])
            self._links.pop((topic, back[0]), None)
            return [], [back[0]]
        judged = [nid for nid in unchoked if self._link(topic, nid).copies >= self.evidence]
        if len(unchoked) <= self.d_eager or not judged:
            return [], []
        latest = max(judged, key=lambda nid: (self._mean_delay(topic, nid), nid))
        choking.add(latest)
        self._links.pop((topic, latest), None)
        return [latest], []

    def _link(self, topic: str, node_id: str) -> _Link:
        return self._links.get((topic, node_id)) or _Link()

    def _mean_delay(self, topic: str, node_id: str) -> float:
        link = self._link(topic, node_id)
        return link.delay / link.copies if link.copies else 0.0

    # ------------------------------------------------------------------ upkeep

    def left_mesh(self, topic: str, node_id: str) -> None:
        """``node_id`` joined or left our mesh on ``topic``, or went: the link starts afresh."""
        self.choking.get(topic, set()).discard(node_id)
        self.choked_by.get(topic, set()).discard(node_id)
        self._links.pop((topic, node_id), None)
        self._relays.pop((topic, node_id), None)
        self.relay_choked_by.pop((topic, node_id), None)
        self._relay_choking.pop((topic, node_id), None)

    def heartbeat(self, now: float) -> None:
        """Decay every record; rotate the first-arrival times; forget lapsed relay chokes."""
        self.relay_choked_by = {k: t for k, t in self.relay_choked_by.items() if t > now}
        self._relay_choking = {k: t for k, t in self._relay_choking.items() if t > now}
        for key in list(self._links):
            link = self._links[key]
            link.copies *= self.decay
            link.delay *= self.decay
            link.firsts *= self.decay
            if link.copies < 0.01:
                del self._links[key]
        self._older, self._first = self._first, {}
