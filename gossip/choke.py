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


class Choker:
    """Per topic: each mesh peer's delivery record, whom we choke, and who chokes us."""

    def __init__(self, d_eager: int, evidence: float, decay: float, clock: Callable[[], float]) -> None:
        self.d_eager = d_eager
        """Unchoked mesh peers kept per topic; 0 turns choking off."""
        self.evidence = evidence
        """Copies a peer must have delivered (decayed) before its delay is judged."""
        self.decay = decay
        self._clock = clock
        self._links: dict[tuple[str, str], _Link] = {}
        self.choking: dict[str, set[str]] = {}
        """Per topic, mesh peers we told to announce instead of push."""
        self.choked_by: dict[str, set[str]] = {}
        """Per topic, peers that told us to announce instead of push."""
        self._first: dict[bytes, float] = {}
        self._older: dict[bytes, float] = {}

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
        """``node_id`` and we are no longer mesh peers on ``topic``: the link starts afresh."""
        self.choking.get(topic, set()).discard(node_id)
        self.choked_by.get(topic, set()).discard(node_id)
        self._links.pop((topic, node_id), None)

    def heartbeat(self) -> None:
        """Decay every record; rotate the first-arrival times."""
        for key in list(self._links):
            link = self._links[key]
            link.copies *= self.decay
            link.delay *= self.decay
            link.firsts *= self.decay
            if link.copies < 0.01:
                del self._links[key]
        self._older, self._first = self._first, {}
