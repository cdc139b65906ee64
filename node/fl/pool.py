"""Updates waiting to be aggregated, one per sender per base model, and evidence of equivocation.

The pool is what a delegate proposes from. It admits an update only once per (sender, base):
a second, different signed update for a base the sender already used (pending here, or already
considered by a final block) is the sender equivocating. The pool keeps that second update as
evidence (one per sender and base) instead of admitting it; the next payload carries it, and
none of the sender's updates for that base is aggregated. When more eligible updates wait than a
block admits, the genesis selection policy picks them (all, random, trust, or particle swarm over
speed, trust, data size and staleness).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from learning.selection import select_nodes, selection_features
from node.fl.update import ModelUpdate
from node.fl.window import BaseKey

EQUIVOCATION = "equivocation"
EQUIVOCATION_KNOWN = "equivocation already known"


@dataclass
class Pending:
    update: ModelUpdate
    arrived_s: float


class UpdatePool:
    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._by_id: dict[bytes, Pending] = {}
        self._by_base: dict[BaseKey, bytes] = {}
        self._evidence: dict[BaseKey, tuple[bytes, ModelUpdate]] = {}  # first id, the second update

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, update_id: bytes) -> ModelUpdate | None:
        """A pending update, or the second update of a piece of evidence, by id."""
        pending = self._by_id.get(update_id)
        if pending is not None:
            return pending.update
        return next((u for _, u in self._evidence.values() if u.id == update_id), None)

    def add(self, update: ModelUpdate, claimed: bytes | None = None) -> str | None:
        """Admit ``update``; returns why not, or None.

        ``claimed`` is the id of the update a final block already considered for this sender and
        base, if any. Refusals: ``duplicate`` (held, or already considered), ``equivocation``
        (a second update for the base: kept as evidence), ``equivocation already known``,
        ``full``.
        """
        if update.id in self._by_id or update.id == claimed:
            return "duplicate"
        key = update.base_key
        first = self._by_base.get(key) or claimed
        if first is not None:
            if key in self._evidence:
                return EQUIVOCATION_KNOWN
            if len(self._evidence) >= self.capacity:
                return "full"
            self._evidence[key] = (first, update)
            return EQUIVOCATION
        if len(self._by_id) >= self.capacity:
            return "full"
        self._by_id[update.id] = Pending(update, time.monotonic())
        self._by_base[key] = update.id
        return None

    def evidence(self) -> list[tuple[BaseKey, bytes, ModelUpdate]]:
        """(sender and base, first update id, second update) of every known equivocation."""
        return [(key, first, second) for key, (first, second) in sorted(self._evidence.items())]

    def settle(self, claims: dict[BaseKey, bytes], punished: set[BaseKey]) -> None:
        """A final block considered ``claims`` and punished ``punished``: drop what it used; a
        different update still pending for a claimed base becomes evidence against its sender."""
        for key, claimed in claims.items():
            held = self._by_base.pop(key, None)
            if held is None:
                continue
            pending = self._by_id.pop(held)
            if held != claimed and key not in self._evidence:
                self._evidence[key] = (claimed, pending.update)
        for key in punished:
            self._evidence.pop(key, None)

    def prune(self, min_base_height: int) -> None:
        """Drop updates and evidence whose base is too old to be aggregated or punished."""
        for uid in [uid for uid, p in self._by_id.items() if p.update.base_height < min_base_height]:
            self._by_base.pop(self._by_id.pop(uid).update.base_key, None)
        self._evidence = {k: v for k, v in self._evidence.items() if k[1] >= min_base_height}

    def on_base(self, base_hash: bytes) -> list[ModelUpdate]:
        return [p.update for p in self._by_id.values() if p.update.base_hash == base_hash]

    def eligible(self, recent: dict[int, bytes], is_member: Callable[[str], bool],
                 banned: Callable[[BaseKey], bool]) -> list[Pending]:
        """Per sender, its update on the newest recent base; only members, only known bases, never
        an equivocator's update for the base it equivocated on."""
        best: dict[str, Pending] = {}
        for p in self._by_id.values():
            u = p.update
            if (recent.get(u.base_height) != u.base_hash or not is_member(u.sender) or u.base_key in self._evidence
                    or banned(u.base_key)):
                continue
            cur = best.get(u.sender)
            if cur is None or (u.base_height, cur.update.id) > (cur.update.base_height, u.id):
                best[u.sender] = p
        return [best[s] for s in sorted(best)]

    def select(self, recent: dict[int, bytes], is_member: Callable[[str], bool], banned: Callable[[BaseKey], bool],
               model_height: int, limit: int, policy: str, trust: Callable[[str], float], seed: int,
               model_since_s: dict[int, float]) -> list[ModelUpdate]:
        """The updates a proposal considers, ordered by sender id (the order verifiers re-run)."""
        chosen = self.eligible(recent, is_member, banned)
        if len(chosen) > limit:
            now = time.monotonic()
            features = selection_features([p.arrived_s - model_since_s.get(p.update.base_height, now) for p in chosen],
                                          [trust(p.update.sender) for p in chosen],
                                          [p.update.num_samples for p in chosen],
                                          [model_height - p.update.base_height for p in chosen])
            picked = select_nodes(policy, features, limit, seed)
            chosen = [chosen[i] for i in sorted(picked)]
        return [p.update for p in chosen]
