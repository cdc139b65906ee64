"""Updates waiting to be aggregated, one per sender per base model.

The pool is what a delegate proposes from. It admits an update only once per (sender, base
model): a second, different update for the same base is the sender equivocating and is refused.
When more eligible updates wait than a block admits, the genesis selection policy picks them
(all, random, trust, or particle swarm over speed, trust, data size and staleness).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from learning.selection import select_nodes
from node.fl.update import ModelUpdate


@dataclass
class Pending:
    update: ModelUpdate
    arrived_s: float


class UpdatePool:
    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._by_id: dict[bytes, Pending] = {}
        self._by_sender_base: dict[tuple[str, bytes], bytes] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, update_id: bytes) -> ModelUpdate | None:
        pending = self._by_id.get(update_id)
        return pending.update if pending else None

    def add(self, update: ModelUpdate) -> str | None:
        """Admit ``update``; returns why not (``duplicate``, ``conflict``, ``full``) or None."""
        if update.id in self._by_id:
            return "duplicate"
        key = (update.sender, update.base_hash)
        if key in self._by_sender_base:
            return "conflict: a different update from this sender for this base model"
        if len(self._by_id) >= self.capacity:
            return "full"
        self._by_id[update.id] = Pending(update, time.monotonic())
        self._by_sender_base[key] = update.id
        return None

    def remove(self, ids: list[bytes]) -> None:
        for uid in ids:
            pending = self._by_id.pop(uid, None)
            if pending is not None:
                self._by_sender_base.pop((pending.update.sender, pending.update.base_hash), None)

    def prune(self, min_base_height: int) -> None:
        """Drop updates whose base is too old to be aggregated any more."""
        self.remove([uid for uid, p in self._by_id.items() if p.update.base_height < min_base_height])

    def on_base(self, base_hash: bytes) -> list[ModelUpdate]:
        return [p.update for p in self._by_id.values() if p.update.base_hash == base_hash]

    def eligible(self, recent: dict[int, bytes], is_member: Callable[[str], bool]) -> list[Pending]:
        """Per sender, its update on the newest recent base; only members, only known bases."""
        best: dict[str, Pending] = {}
        for p in self._by_id.values():
            u = p.update
            if recent.get(u.base_height) != u.base_hash or not is_member(u.sender):
                continue
            cur = best.get(u.sender)
            if cur is None or (u.base_height, cur.update.id) > (cur.update.base_height, u.id):
                best[u.sender] = p
        return [best[s] for s in sorted(best)]

    def select(self, recent: dict[int, bytes], is_member: Callable[[str], bool], model_height: int,
               limit: int, policy: str, trust: Callable[[str], float], seed: int,
               model_since_s: dict[int, float]) -> list[ModelUpdate]:
        """The updates a proposal considers, ordered by sender id (the order verifiers re-run)."""
        chosen = self.eligible(recent, is_member)
        if len(chosen) > limit:
            now = time.monotonic()
            speed = [1.0 / (1.0 + max(0.0, p.arrived_s - model_since_s.get(p.update.base_height, now)))
                     for p in chosen]
            features = {
                "speed": np.array(speed),
                "trust": np.array([trust(p.update.sender) for p in chosen]),
                "data_size": np.array([p.update.num_samples for p in chosen], dtype=np.float64),
                "staleness": np.array([model_height - p.update.base_height for p in chosen], dtype=np.float64),
            }
            picked = select_nodes(policy, features, limit, seed)
            chosen = [chosen[i] for i in sorted(picked)]
        return [p.update for p in chosen]
