"""One aggregation round: the step a proposer runs and every verifying delegate re-runs.

Given the current global model, the updates a block lists (in the listed order) and the senders'
trust, it weights each update by samples x staleness (FedAsync polynomial), runs the genesis
rule, and adds the aggregate to the model. Everything is deterministic (same inputs, same order,
same bits), so a verifier that gets a different model hash knows the proposer lied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gossip.codec import DecodeError, pack, unpack
from learning.aggregation import aggregate, staleness_weight
from node.fl.blobs import model_hash
from node.fl.settings import FLSettings
from node.fl.update import ModelUpdate

PAYLOAD_VERSION = "fl/1"


@dataclass(frozen=True)
class Considered:
    """One update a block considered, and what the rule made of it."""

    update_id: bytes
    sender: str
    weight: float
    accepted: bool
    reason: str
    score: float

    def to_wire(self) -> list:
        return [self.update_id, self.sender, self.weight, self.accepted, self.reason, self.score]

    def to_json(self) -> dict:
        return {"id": self.update_id.hex(), "sender": self.sender, "weight": self.weight,
                "accepted": self.accepted, "reason": self.reason,
                "score": self.score if math.isfinite(self.score) else None}


@dataclass(frozen=True)
class Payload:
    """What an FL block carries: the rule, the base and new model hashes, every update considered,
    and proposals of this height shown to be wrong (``faults``: [signed header wire, payload])."""

    rule: str
    base_hash: bytes
    new_hash: bytes
    considered: tuple[Considered, ...]
    faults: tuple[tuple[list, bytes], ...] = ()

    def encode(self) -> bytes:
        return pack([PAYLOAD_VERSION, self.rule, self.base_hash, self.new_hash,
                     [c.to_wire() for c in self.considered], [[h, p] for h, p in self.faults]])

    @classmethod
    def decode(cls, data: bytes, max_size: int) -> "Payload":
        obj = unpack(data, max_size)
        if not (isinstance(obj, list) and len(obj) == 6 and obj[0] == PAYLOAD_VERSION):
            raise DecodeError("not an fl/1 payload")
        _, rule, base, new, rows, faults = obj
        if not (isinstance(rule, str) and isinstance(base, bytes) and isinstance(new, bytes)
                and isinstance(rows, list) and isinstance(faults, list)):
            raise DecodeError("fl payload fields malformed")
        considered = []
        for r in rows:
            if not (isinstance(r, list) and len(r) == 6 and isinstance(r[0], bytes) and isinstance(r[1], str)
                    and isinstance(r[2], float) and isinstance(r[3], bool) and isinstance(r[4], str)
                    and isinstance(r[5], float)):
                raise DecodeError("fl payload row malformed")
            considered.append(Considered(*r))
        pairs = []
        for f in faults:
            if not (isinstance(f, list) and len(f) == 2 and isinstance(f[0], list) and isinstance(f[1], bytes)):
                raise DecodeError("fl payload fault malformed")
            pairs.append((f[0], f[1]))
        return cls(rule, base, new, tuple(considered), tuple(pairs))


@dataclass(frozen=True)
class RoundResult:
    payload: Payload
    model: np.ndarray


def run_round(settings: FLSettings, model: np.ndarray, model_height: int, base_hash: bytes,
              updates: list[ModelUpdate], trust: dict[str, float], seed: int,
              evaluate: Callable[[np.ndarray], float] | None) -> RoundResult:
    """Aggregate ``updates`` (in this order) onto ``model``; pure and deterministic."""
    if not updates:
        return RoundResult(Payload(settings.rule, base_hash, base_hash, ()), model)
    stacked = np.stack([u.dense() for u in updates]).astype(np.float32, copy=False)
    staleness = np.array([model_height - u.base_height for u in updates], dtype=np.float64)
    weights = np.array([u.num_samples for u in updates], dtype=np.float64) * staleness_weight(
        staleness, settings.staleness_a)
    trusts = np.array([trust.get(u.sender, 0.0) for u in updates], dtype=np.float64)
    effective = weights * trusts if settings.rule == "trust" else weights
    if not (effective > 0).any():  # nobody carries weight (e.g. every sender has zero stake): no step
        considered = tuple(Considered(u.id, u.sender, float(w), False, "zero weight", math.inf)
                           for u, w in zip(updates, weights))
        return RoundResult(Payload(settings.rule, base_hash, base_hash, considered), model)
    result = aggregate(settings.rule, stacked, weights, trust=trusts if settings.rule == "trust" else None,
                       seed=seed, evaluate=evaluate, **settings.rule_params)
    new_model = (model + np.float32(settings.server_lr) * result.vector).astype(np.float32)
    if not np.isfinite(new_model).all():
        raise ValueError("aggregation produced a non-finite model")
    considered = tuple(
        Considered(u.id, u.sender, float(w), bool(a), str(r), float(s))
        for u, w, a, r, s in zip(updates, weights, result.accepted, result.reasons, result.scores))
    return RoundResult(Payload(settings.rule, base_hash, model_hash(new_model), considered), new_model)
