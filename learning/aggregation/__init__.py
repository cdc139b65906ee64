"""Byzantine-robust aggregation of flat float32 model updates.

One entry point, :func:`aggregate`, dispatches to the rule named in the genesis file. Every rule
returns an :class:`AggregationResult` (aggregate, accepted mask, suspicion scores, reasons) and
is deterministic: delegates re-run it to verify a block, so the same inputs in the same order
give a bit-identical vector (see :mod:`._core` for how).

Rules and their modules: ``fedavg``/``trust`` (:mod:`.mean`), ``krum``/``multikrum``/``bulyan``
(:mod:`.krum`), ``median``/``trimmed_mean`` (:mod:`.coordinate`), ``geomed`` (:mod:`.geomed`),
``centered_clip`` (:mod:`.clipping`), ``clustering`` (:mod:`.clustering`).

``DEFAULT_RULE`` is ``"clustering"``: across the attacks of :mod:`learning.attacks` it keeps the
aggregate closest to the honest mean while, unlike Krum, Median or Bulyan, averaging all accepted
honest updates (full statistical efficiency when nobody attacks); the test suite and
``bench/aggregation_speed.py --robustness`` compare the rules.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from . import clipping, clustering, coordinate, geomed, krum, mean
from ._core import AggregationResult, Inputs, as_updates, as_vector, require_finite, result
from .staleness import staleness_weight

__all__ = ["DEFAULT_RULE", "RULES", "RULE_NAMES", "AggregationResult", "aggregate", "staleness_weight"]

RULES: dict[str, Callable[..., AggregationResult]] = {
    "fedavg": mean.fedavg,
    "trust": mean.trust_weighted,
    "krum": krum.krum,
    "multikrum": krum.multikrum,
    "median": coordinate.median,
    "trimmed_mean": coordinate.trimmed_mean,
    "geomed": geomed.geomed,
    "bulyan": krum.bulyan,
    "centered_clip": clipping.centered_clip,
    "clustering": clustering.clustering,
}
RULE_NAMES: tuple[str, ...] = tuple(RULES)
DEFAULT_RULE = "clustering"
# Every other rule forms the Gram matrix or a weighted sum of all rows, which exposes NaN/Inf
# exactly; the coordinate-wise rules would silently sort NaN to one end, so they check up front.
_CHECK_UP_FRONT = frozenset({"median", "trimmed_mean"})


def _params_of(rule: Callable[..., AggregationResult]) -> set[str]:
    return {p.name for p in inspect.signature(rule).parameters.values() if p.kind is p.KEYWORD_ONLY}


def rule_parameters(rule: str) -> set[str]:
    """The rule-specific keyword parameters ``aggregate(rule, ..., **params)`` accepts."""
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; choose one of {', '.join(RULE_NAMES)}")
    return _params_of(RULES[rule])


def aggregate(rule: str, updates: np.ndarray, weights: np.ndarray | None = None, *,
              trust: np.ndarray | None = None, f: int | None = None, seed: int = 0,
              evaluate: Callable[[np.ndarray], float] | None = None, **params: Any) -> AggregationResult:
    """Aggregate ``updates`` (n, d) with ``rule``.

    ``weights`` (n,): sample counts times staleness weights (default all 1); fedavg, trust,
    multikrum, geomed, centered_clip and clustering average with them, the others only select.
    ``trust`` (n,) is required by ``"trust"`` (its weights become ``weights * trust``) and
    ignored otherwise. ``f``: assumed number of Byzantine updates (None = the largest the rule
    supports; too large a value is reduced and reported in ``info``). ``seed`` drives the only
    randomness (k-means++ seeding). ``evaluate`` (validation accuracy of a candidate vector) is
    used by ``"clustering"`` to tune its radius. ``params`` are rule-specific (see each rule).

    Updates with zero weight (or zero trust) are excluded before the rule runs: they are reported
    as rejected with score +inf. Raises ValueError on an unknown rule or parameter, bad shapes,
    NaN/Inf, negative weights, or when every weight is zero.
    """
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; choose one of {', '.join(RULE_NAMES)}")
    fn = RULES[rule]
    unknown = set(params) - _params_of(fn)
    if unknown:
        raise ValueError(f"{rule}: unknown parameter(s) {sorted(unknown)}; accepted: {sorted(_params_of(fn))}")
    if evaluate is not None and not callable(evaluate):
        raise ValueError("evaluate must be callable")
    x = as_updates(updates, check_finite=rule in _CHECK_UP_FRONT)
    n = x.shape[0]
    w = np.ones(n) if weights is None else as_vector(weights, n, "weights")
    zero_reason = "zero weight"
    if rule == "trust":
        if trust is None:
            raise ValueError("trust: the trust-weighted rule needs a trust vector")
        t = as_vector(trust, n, "trust")
        zero_reason = "zero trust or weight"
        w = w * t
    live = w > 0
    if not live.any():
        raise ValueError(f"{rule}: every update has zero weight")
    if live.all():
        return fn(Inputs(x, w, f, int(seed), evaluate), **params)
    if rule not in _CHECK_UP_FRONT:
        require_finite(x)                    # excluded rows must be valid too
    rows = np.flatnonzero(live)
    inner = fn(Inputs(np.ascontiguousarray(x[rows]), w[rows], f, int(seed), evaluate), **params)
    accepted = np.zeros(n, dtype=bool)
    accepted[rows] = inner.accepted
    scores = np.full(n, np.inf)
    scores[rows] = inner.scores
    reasons = [zero_reason] * n
    for pos, reason in zip(rows.tolist(), inner.reasons):
        reasons[pos] = reason
    return result(inner.vector, accepted, scores, reasons, **inner.info, excluded=int(n - rows.size))
