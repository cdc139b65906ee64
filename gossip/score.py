"""Peer scores and bans, keyed by node id so that reconnecting does not wipe the slate.

A score starts at 0 and only goes down, by a penalty per misbehaviour (see
``config.DEFAULT_PENALTIES``); it decays back towards 0 with a half-life so that an honest peer
that once forwarded something bad recovers, while one that keeps misbehaving sinks. Below the
threshold the peer is banned for a while: disconnected and refused at the handshake.

There is deliberately no positive credit (gossipsub v1.1 rewards first deliveries): without it a
peer cannot bank good behaviour to spend on a burst of attacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_NEGLIGIBLE = 1e-3


class PeerScores:
    def __init__(self, penalties: dict[str, float], threshold: float, half_life: float,
                 ban_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.penalties = dict(penalties)
        self.threshold = threshold
        self.half_life = half_life
        self.ban_seconds = ban_seconds
        self._clock = clock
        self._scores: dict[str, tuple[float, float]] = {}  # node id -> (score, as of when)
        self._bans: dict[str, float] = {}  # node id -> ban expiry

    def score(self, node_id: str) -> float:
        """Current (decayed) score of ``node_id``; 0 for a peer never penalised."""
        entry = self._scores.get(node_id)
        if entry is None:
            return 0.0
        value, stamp = entry
        return value * 0.5 ** ((self._clock() - stamp) / self.half_life)

    def penalize(self, node_id: str, reason: str) -> bool:
        """Apply the penalty for ``reason``; True when the peer just fell below the threshold
        (the caller bans and disconnects it). Reasons without a penalty change nothing."""
        cost = self.penalties.get(reason, 0.0)
        if cost <= 0:
            return False
        value = self.score(node_id) - cost
        self._scores[node_id] = (value, self._clock())
        return value <= self.threshold and not self.is_banned(node_id)

    def ban(self, node_id: str, seconds: float | None = None) -> None:
        self._bans[node_id] = self._clock() + (self.ban_seconds if seconds is None else seconds)

    def is_banned(self, node_id: str) -> bool:
        expiry = self._bans.get(node_id)
        if expiry is None:
            return False
        if expiry > self._clock():
            return True
        self._lift(node_id)
        return False

    def _lift(self, node_id: str) -> None:
        """End a ban; the score is cleared too, so a peer returning from a ban starts at 0
        rather than being banned again by its first trivial penalty."""
        del self._bans[node_id]
        self._scores.pop(node_id, None)

    def banned(self) -> dict[str, float]:
        """Banned node ids and the seconds left on each ban."""
        now = self._clock()
        return {nid: exp - now for nid, exp in self._bans.items() if exp > now}

    def prune(self) -> None:
        """Forget expired bans and scores that have decayed to nothing (bounded memory)."""
        for nid in list(self._bans):
            self.is_banned(nid)
        for nid in [n for n in self._scores if abs(self.score(n)) < _NEGLIGIBLE]:
            del self._scores[nid]
