"""Hierarchical aggregation (Secured-FL's cluster heads): clusters of updates, each aggregated by
the genesis rule, and the clusters' partial aggregates combined robustly.

Why: every robust rule forms an n x n Gram matrix and then works in n-space (k-means with a
size-constrained assignment, Weiszfeld iterations), so a flat round grows faster than linearly
with the number of updates, and every verifier re-runs all of it. Split into clusters of at most
``cluster_size`` updates, the work is ``n / cluster_size`` rounds of bounded size, and a verifier
that re-runs only the clusters it is assigned plus the combination does bounded work per block.

* **Assignment** (:func:`assign`): each sender's key is SHA-256 of the round's seed (a chain's
  height) and its id; senders sorted by key are dealt round-robin to ``ceil(n / cluster_size)``
  clusters. Sizes differ by at most one, the clusters change every round (an attacker cannot
  pick its cluster), and the result depends on the set of senders only, not on their order.
* **Weights**: the cap on claimed weights (``weight_cap`` x the median) is applied once over all
  updates, as a flat round applies it, so a cluster of small claims does not give one large
  claim more say; clusters then aggregate the capped weights without a cap of their own.
* **Per cluster**: the genesis rule with the genesis parameters, seeded per cluster
  (:func:`cluster_seed`), without the default rule's validation guard (:data:`UNGUARDED`: a
  partial is not the round's step; with ``combine = "rule"`` the combination is guarded). Its
  accepted list and reasons are the updates' own.
* **Combination** (:func:`combine`): the partials weighted by their clusters' accepted weight,
  either by the weighted geometric median (``geomed``, the default: no partial is ever set
  aside, a wrong partial moves the result by a bounded amount) or by the genesis rule itself
  (``rule``; a partial it rejects is "set aside" and its members are not accepted).

Everything is built from :func:`learning.aggregation.aggregate`, so every number is the same on
every CPU for the same inputs in the same order, as for a flat round.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from learning.aggregation import AggregationResult, WitnessRows
from learning.aggregation.exact import total
from learning.aggregation.weighting import DEFAULT_WEIGHT_CAP, cap_weights, check_cap

COMBINE = ("geomed", "rule")
UNGUARDED = {"clustering": {"guard": 0.0}}
"""Rule parameters a cluster's run overrides: the default rule's validation guard compares a step
with the current model, and a cluster's partial is only part of the round's step (guarded, the
clusters of ten in ``bench hierarchy`` lost 55 of 100 honest updates a round)."""
KEYS = ("threshold", "cluster_size", "combine", "verify")

Evaluate = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Hierarchy:
    """The genesis ``hierarchy`` section: ``{}`` keeps every round flat.

    ``threshold``: rounds with at least this many updates are hierarchical. ``cluster_size``: the
    largest cluster. ``combine``: how partials are combined (:data:`COMBINE`). ``verify``: how
    many clusters each verifying delegate re-runs (besides the combination).
    """

    threshold: int
    cluster_size: int
    combine: str = "geomed"
    verify: int = 2

    @classmethod
    def parse(cls, section: dict[str, Any]) -> Hierarchy | None:
        """None for ``{}``; ValueError naming every problem otherwise."""
        if not section:
            return None
        problems = [f"unknown hierarchy key {k!r} (known: {', '.join(KEYS)})" for k in sorted(set(section) - set(KEYS))]
        for key in ("threshold", "cluster_size", "verify"):
            value = section.get(key, 2 if key == "verify" else None)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "verify" else 2):
                problems.append(f"hierarchy.{key} must be an integer >= {1 if key == 'verify' else 2}, got {value!r}")
        if section.get("combine", "geomed") not in COMBINE:
            problems.append(f"hierarchy.combine must be one of {COMBINE}")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**section)

    def applies(self, n: int) -> bool:
        return n >= self.threshold


def clusters_for(n: int, cluster_size: int) -> int:
    return max(1, math.ceil(n / cluster_size))


def _key(seed: int, sender: object) -> bytes:
    return hashlib.sha256(f"fedchain/cluster/{seed}/{sender}".encode()).digest()


def assign(seed: int, senders: Sequence[object], cluster_size: int) -> np.ndarray:
    """The cluster (0 .. k-1) of each sender, in input order; depends on the set, not the order."""
    n = len(senders)
    k = clusters_for(n, cluster_size)
    order = sorted(range(n), key=lambda i: (_key(seed, senders[i]), str(senders[i]), i))
    labels = np.empty(n, dtype=np.int64)
    labels[order] = np.arange(n) % k
    return labels


def cluster_seed(seed: int, cluster: int) -> int:
    """The rule's seed in ``cluster`` of a round seeded ``seed`` (64 bits of a hash)."""
    return int.from_bytes(hashlib.sha256(f"fedchain/cluster-rule/{seed}/{cluster}".encode()).digest()[:8], "big")


def verifier_clusters(seed: int, verifier: object, k: int, count: int,
                      committee: Sequence[object] = ()) -> list[int]:
    """The ``count`` consecutive clusters a verifier re-runs, from a start nobody chooses.

    A member of ``committee`` (a chain's delegates) takes its rank when the committee is sorted by
    a hash of the round's seed and each id, and starts at ``rank * count``: the committee deals
    itself the clusters in turn, so when ``len(committee) * count >= k`` every cluster has a
    watcher, and no cluster more than one beyond the others. Anyone else starts where a hash of
    the seed and its id points."""
    if verifier in committee:
        ranked = sorted(committee, key=lambda member: (_key(seed, f"verify/{member}"), str(member)))
        start = ranked.index(verifier) * count % k
    else:
        start = int.from_bytes(_key(seed, f"verify/{verifier}")[:8], "big") % k
    return sorted({(start + i) % k for i in range(min(count, k))})


def global_cap(weights: np.ndarray, live: np.ndarray, rule_params: dict[str, Any]) -> tuple[np.ndarray, dict]:
    """Weights capped over the whole round, and the rule parameters without the cap (applied)."""
    params = dict(rule_params)
    cap = check_cap(params.pop("weight_cap", DEFAULT_WEIGHT_CAP))
    capped, _ = cap_weights(np.asarray(weights, dtype=np.float64), live, cap)
    return np.where(live, capped, 0.0), params


@dataclass(frozen=True)
class Partial:
    """One cluster's result: its members (indices into the round's updates, ascending), the
    rule's verdicts on them, and its partial aggregate (None when the cluster produced none)."""

    cluster: int
    members: np.ndarray
    accepted: np.ndarray
    reasons: list[str]
    scores: np.ndarray
    vector: np.ndarray | None
    weight: float                 # the effective weight of its accepted members
    evaluations: int              # calls the rule made to ``evaluate``
    kept: bool = True             # used by the combination


class _Counting:
    def __init__(self, evaluate: Evaluate | None) -> None:
        self.evaluate, self.calls = evaluate, 0

    def __call__(self, delta: np.ndarray) -> float:
        self.calls += 1
        return self.evaluate(delta)  # type: ignore[misc]


def run_cluster(aggregator: Callable[..., AggregationResult], rule: str, params: dict[str, Any], cluster: int,
                members: np.ndarray, updates: np.ndarray, weights: np.ndarray, trust: np.ndarray, seed: int,
                evaluate: Evaluate | None, held: np.ndarray | None = None,
                witness: WitnessRows | None = None) -> Partial:
    """The genesis rule on one cluster. ``weights`` are the round's capped weights (:func:`global_cap`);
    ``params`` the rule parameters without the cap; ``held`` the round's holds (per update), of which
    the cluster's rule gets its members', and ``witness`` the chain's witness rows, with its members'
    owners. A cluster whose rule raises has no partial."""
    w, t = weights[members], trust[members]
    effective = w * t if rule == "trust" else w
    m = members.size
    if not (effective > 0).any():
        return Partial(cluster, members, np.zeros(m, bool), ["zero weight"] * m, np.full(m, np.inf), None, 0.0, 0)
    counting = _Counting(evaluate)
    try:
        res = aggregator(rule, np.ascontiguousarray(updates[members]), w, trust=t, seed=cluster_seed(seed, cluster),
                         evaluate=None if evaluate is None else counting, weight_cap=None,
                         held=None if held is None else held[members],
                         witness=None if witness is None else witness.subset(members),
                         **{**params, **UNGUARDED.get(rule, {})})
    except ValueError as exc:
        why = f"cluster {cluster}: aggregation failed: {exc}"
        return Partial(cluster, members, np.zeros(m, bool), [why] * m, np.full(m, np.nan), None, 0.0, counting.calls)
    accepted = np.asarray(res.accepted, dtype=bool)
    return Partial(cluster, members, accepted, [str(r) for r in res.reasons], np.asarray(res.scores, np.float64),
                   res.vector, total(effective[accepted]), counting.calls)


def combine(aggregator: Callable[..., AggregationResult], method: str, rule: str, params: dict[str, Any],
            vectors: np.ndarray, weights: np.ndarray, seed: int,
            evaluate: Evaluate | None) -> tuple[np.ndarray, np.ndarray]:
    """The combined aggregate of the partials ``vectors`` (k, d) weighted by ``weights``, and which
    partials it used. ValueError (AggregationError) when no finite combination exists."""
    if method == "geomed":
        res = aggregator("geomed", vectors, weights, seed=seed, weight_cap=None)
    else:
        res = aggregator("fedavg" if rule == "trust" else rule, vectors, weights, seed=seed, evaluate=evaluate,
                         weight_cap=None, **params)
    return res.vector, np.asarray(res.accepted, dtype=bool)


@dataclass(frozen=True)
class HierarchicalResult:
    vector: np.ndarray
    accepted: np.ndarray
    reasons: list[str]
    scores: np.ndarray
    partials: tuple[Partial, ...]


def run_hierarchy(aggregator: Callable[..., AggregationResult], hierarchy: Hierarchy, rule: str,
                  rule_params: dict[str, Any], updates: np.ndarray, weights: np.ndarray, trust: np.ndarray,
                  senders: Sequence[object], seed: int, evaluate: Evaluate | None,
                  held: np.ndarray | None = None, witness: WitnessRows | None = None) -> HierarchicalResult:
    """Every cluster in order, then the combination (``evaluate`` is called in that order too).
    Raises ValueError when no cluster produced a partial or the combination fails."""
    n = updates.shape[0]
    live = (weights * trust if rule == "trust" else weights) > 0
    capped, params = global_cap(weights, live, rule_params)
    labels = assign(seed, senders, hierarchy.cluster_size)
    partials = [run_cluster(aggregator, rule, params, c, np.flatnonzero(labels == c), updates, capped, trust, seed,
                            evaluate, held, witness) for c in range(int(labels.max()) + 1)]
    with_vector = [p for p in partials if p.vector is not None and p.weight > 0]
    if not with_vector:
        raise ValueError("no cluster produced a partial aggregate")
    vector, kept = combine(aggregator, hierarchy.combine, rule, params, np.stack([p.vector for p in with_vector]),
                           np.array([p.weight for p in with_vector]), seed, evaluate)
    set_aside = {p.cluster for p, k in zip(with_vector, kept.tolist()) if not k}
    partials = [Partial(p.cluster, p.members, p.accepted, p.reasons, p.scores, p.vector, p.weight, p.evaluations,
                        p.cluster not in set_aside and p.vector is not None and p.weight > 0) for p in partials]
    accepted = np.zeros(n, dtype=bool)
    scores = np.zeros(n)
    reasons = [""] * n
    for p in partials:
        ok = p.accepted & p.kept
        accepted[p.members] = ok
        scores[p.members] = p.scores
        for i, ok_i, reason, took in zip(p.members.tolist(), ok.tolist(), p.reasons, p.accepted.tolist()):
            reasons[i] = reason if not took or ok_i else f"hierarchy: cluster {p.cluster}'s partial set aside"
    return HierarchicalResult(vector, accepted, reasons, scores, tuple(partials))
