"""One aggregation round as a block carries it: the step a proposer runs and every verifying
delegate re-runs.

The round itself is :func:`learning.round.run_round`, the function the simulator runs too:
weights = samples x staleness discount, the genesis rule, the aggregate added to the model, or a
skipped round (model unchanged, every update listed with the reason, nobody rewarded or
penalized). This module turns it into the block payload: every update considered, the rule's
evaluations, equivocation evidence, faults. Same inputs in the same order give the same decisions
(update, sender, weight, accepted, reason) and model hash on every CPU; suspicion scores are only
reported and may differ in their last bits, so they are compared within :data:`SCORE_TOLERANCE`.

A hierarchical round (genesis ``hierarchy``, :mod:`learning.hierarchy`) also lists each cluster's
partial aggregate (:class:`PartialRecord`: members, hash, weight, evaluations, whether the
combination used it); the proposer keeps each partial's weights as a model blob, so a verifier can
fetch a partial by its hash instead of re-running its cluster (:mod:`node.fl.hierarchy_check`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gossip.codec import DecodeError, pack, unpack
from learning.aggregation import WitnessRows
from learning.hierarchy import Partial
from learning.round import run_round
from learning.standing import round_factors
from node.fl.blobs import model_hash
from node.fl.settings import FLSettings
from node.fl.update import ModelUpdate

PAYLOAD_VERSION = "fl/2"
NOT_AGREED = "round not agreed"
"""Skip reason of a round proposed after an earlier proposal of the height failed to finalize."""
SCORE_TOLERANCE = 1e-6
"""Relative difference allowed between a recorded and a recomputed suspicion score."""


def scores_agree(a: float, b: float) -> bool:
    if math.isfinite(a) and math.isfinite(b):
        return abs(a - b) <= SCORE_TOLERANCE * max(1.0, abs(a), abs(b))
    return a == b or (math.isnan(a) and math.isnan(b))


@dataclass(frozen=True)
class Considered:
    """One update a block considered, and what the rule made of it."""

    update_id: bytes
    sender: str
    base_height: int
    weight: float
    accepted: bool
    reason: str
    score: float

    def decision(self) -> tuple:
        """What verifiers compare exactly (everything but the reported score)."""
        return self.update_id, self.sender, self.base_height, self.weight, self.accepted, self.reason

    def to_wire(self) -> list:
        return [*self.decision(), self.score]

    def to_json(self) -> dict:
        return {"id": self.update_id.hex(), "sender": self.sender, "base_height": self.base_height,
                "weight": self.weight, "accepted": self.accepted, "reason": self.reason,
                "score": self.score if math.isfinite(self.score) else None}


@dataclass(frozen=True)
class Equivocation:
    """Two different signed updates of ``sender`` for one base: evidence against their author."""

    sender: str
    base_height: int
    first: bytes
    second: bytes

    def to_wire(self) -> list:
        return [self.sender, self.base_height, self.first, self.second]


def _is_uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


@dataclass(frozen=True)
class PartialRecord:
    """One cluster of a hierarchical round: its members (positions in ``considered``), the hash
    of its partial aggregate (b"" when it has none), the weight the combination gave it, how many
    ``evaluate`` values of the payload its rule used (clusters in order, then the combination's),
    and whether the combination used it."""

    cluster: int
    members: tuple[int, ...]
    hash: bytes
    weight: float
    evaluations: int
    kept: bool

    def to_wire(self) -> list:
        return [self.cluster, list(self.members), self.hash, self.weight, self.evaluations, self.kept]

    @classmethod
    def from_wire(cls, r: object) -> PartialRecord:
        if not (isinstance(r, list) and len(r) == 6 and _is_uint(r[0]) and isinstance(r[1], list)
                and all(_is_uint(m) for m in r[1]) and isinstance(r[2], bytes) and isinstance(r[3], float)
                and _is_uint(r[4]) and isinstance(r[5], bool)):
            raise DecodeError("fl payload partial malformed")
        return cls(r[0], tuple(r[1]), r[2], r[3], r[4], r[5])


@dataclass(frozen=True)
class Payload:
    """What an FL block carries.

    The rule, the base and new model hashes, every update considered, the values the rule's
    ``evaluate`` callback returned (in call order; verifiers feed these to the rule so its
    decisions match), equivocation evidence, proposals of this height shown to be wrong
    (``faults``: [signed header wire, payload]), for a skipped round, why (``skipped``), and for
    a hierarchical round its clusters (``partials``; a tenth wire field, absent in flat rounds).
    """

    rule: str
    base_hash: bytes
    new_hash: bytes
    considered: tuple[Considered, ...]
    evals: tuple[float, ...] = ()
    equivocations: tuple[Equivocation, ...] = ()
    faults: tuple[tuple[list, bytes], ...] = ()
    skipped: str = ""
    partials: tuple[PartialRecord, ...] = ()

    def encode(self) -> bytes:
        fields = [PAYLOAD_VERSION, self.rule, self.base_hash, self.new_hash,
                  [c.to_wire() for c in self.considered], list(self.evals),
                  [e.to_wire() for e in self.equivocations], [[h, p] for h, p in self.faults], self.skipped]
        return pack(fields + [[r.to_wire() for r in self.partials]] if self.partials else fields)

    @classmethod
    def decode(cls, data: bytes, max_size: int) -> Payload:
        obj = unpack(data, max_size)
        if not (isinstance(obj, list) and len(obj) in (9, 10) and obj[0] == PAYLOAD_VERSION):
            raise DecodeError(f"not an {PAYLOAD_VERSION} payload")
        _, rule, base, new, rows, evals, equivocations, faults, skipped = obj[:9]
        wire_partials = obj[9] if len(obj) == 10 else []
        if not (isinstance(wire_partials, list) and (wire_partials or len(obj) == 9)):
            raise DecodeError("fl payload partials malformed")
        partials = tuple(PartialRecord.from_wire(r) for r in wire_partials)
        if not (isinstance(rule, str) and isinstance(base, bytes) and isinstance(new, bytes) and isinstance(rows, list)
                and isinstance(evals, list) and isinstance(equivocations, list) and isinstance(faults, list)
                and isinstance(skipped, str)):
            raise DecodeError("fl payload fields malformed")
        considered = []
        for r in rows:
            if not (isinstance(r, list) and len(r) == 7 and isinstance(r[0], bytes) and isinstance(r[1], str)
                    and _is_uint(r[2]) and isinstance(r[3], float) and isinstance(r[4], bool)
                    and isinstance(r[5], str) and isinstance(r[6], float)):
                raise DecodeError("fl payload row malformed")
            considered.append(Considered(*r))
        if not all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in evals):
            raise DecodeError("fl payload evaluations must be floats in [0, 1]")
        evidence = []
        for e in equivocations:
            if not (isinstance(e, list) and len(e) == 4 and isinstance(e[0], str) and _is_uint(e[1])
                    and isinstance(e[2], bytes) and isinstance(e[3], bytes)):
                raise DecodeError("fl payload equivocation malformed")
            evidence.append(Equivocation(*e))
        pairs = []
        for f in faults:
            if not (isinstance(f, list) and len(f) == 2 and isinstance(f[0], list) and isinstance(f[1], bytes)):
                raise DecodeError("fl payload fault malformed")
            pairs.append((f[0], f[1]))
        return cls(rule, base, new, tuple(considered), tuple(evals), tuple(evidence), tuple(pairs), skipped, partials)

    def to_json(self) -> dict:
        accepted = sum(c.accepted for c in self.considered)
        return {"skipped": self.skipped or None, "considered": len(self.considered), "accepted": accepted,
                "updates": [c.to_json() for c in self.considered],
                "equivocations": [{"sender": e.sender, "base_height": e.base_height, "first": e.first.hex(),
                                   "second": e.second.hex()} for e in self.equivocations],
                "faults": len(self.faults), "evaluations": list(self.evals),
                **({"clusters": [{"cluster": r.cluster, "members": list(r.members), "partial": r.hash.hex(),
                                  "weight": r.weight, "kept": r.kept} for r in self.partials]} if self.partials else {})}


@dataclass(frozen=True)
class RoundResult:
    payload: Payload
    model: np.ndarray
    partials: tuple[np.ndarray | None, ...] = ()   # a hierarchical round's partial aggregates, by cluster


def block_round(settings: FLSettings, model: np.ndarray, model_height: int, base_hash: bytes,
                updates: list[ModelUpdate], trust: dict[str, float], seed: int,
                evaluate: Callable[[np.ndarray], float] | None, groups: np.ndarray | None = None,
                reference: np.ndarray | None = None, held: Collection[str] = frozenset(),
                witness: WitnessRows | None = None, standing: Mapping[str, Sequence[tuple[int, float]]] | None = None
                ) -> RoundResult:
    """:func:`learning.round.run_round` on ``updates`` (in this order), as a block's payload; pure
    and deterministic. ``evaluate`` scores a candidate model; staleness is in heights; ``groups``
    is the model's feature layout (:func:`learning.models.feature_groups`); ``reference`` how the
    model moved over the window (:func:`learning.round.drift`); ``held`` the senders the chain
    holds for pointing against it (:class:`node.fl.window.Window`); ``witness`` the feature clip's
    witness rows (:mod:`node.fl.witness`); ``standing`` the chain's record of senders' accepted
    scores (:class:`node.fl.window.Window`), which scales their weights under the default rule."""
    if not updates:
        return RoundResult(Payload(settings.rule, base_hash, base_hash, ()), model)
    outcome = run_round(settings, model, np.stack([u.dense() for u in updates]), [u.num_samples for u in updates],
                        [model_height - u.base_height for u in updates], [trust.get(u.sender, 0.0) for u in updates],
                        seed=seed, evaluate=evaluate, senders=[u.sender for u in updates], groups=groups,
                        reference=reference, held=[u.sender in held for u in updates], witness=witness,
                        standing=round_factors(settings, standing, [u.sender for u in updates]))
    considered = tuple(Considered(u.id, u.sender, u.base_height, float(w), bool(a), r, float(s))
                       for u, w, a, r, s in zip(updates, outcome.weights.tolist(), outcome.accepted.tolist(),
                                                outcome.reasons, outcome.scores.tolist()))
    new_hash = base_hash if outcome.model is model else model_hash(outcome.model)
    records = tuple(partial_record(p) for p in outcome.partials)
    return RoundResult(Payload(settings.rule, base_hash, new_hash, considered, skipped=outcome.skipped,
                               partials=records), outcome.model, tuple(p.vector for p in outcome.partials))


def partial_record(p: Partial) -> PartialRecord:
    return PartialRecord(p.cluster, tuple(p.members.tolist()), b"" if p.vector is None else model_hash(p.vector),
                         float(p.weight), p.evaluations, bool(p.kept))
