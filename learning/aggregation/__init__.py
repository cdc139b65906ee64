"""Byzantine-robust aggregation of flat float32 model updates.

One entry point, :func:`aggregate`, dispatches to the rule named in the genesis file. Every rule
returns an :class:`AggregationResult` (aggregate, accepted mask, suspicion scores, reasons, info).

Guarantees (delegates re-run the aggregation to verify a block):

* **Bit-identical everywhere.** For the same inputs in the same order (and, for ``clustering``,
  the same ``evaluate`` return values), every field of the result - vector, accepted, scores,
  reasons, info - has the same bits on every IEEE-754 machine, whatever its BLAS kernel, thread
  count or SIMD width: geometry is exact fixed point, the rest fixed-order correctly rounded
  arithmetic (:mod:`.exact`, :mod:`._core`).
* **Bounded influence.** Each positive weight is clipped to ``weight_cap`` x the median positive
  weight before any rule runs (:mod:`.weighting`), so no claimed sample count, however large,
  buys more than ``weight_cap`` times a typical sender's say.
* **Finite or an error.** Finite inputs give a vector finite in float32, or
  :class:`AggregationError` (a ValueError) when no finite aggregate exists; the caller skips the
  round. NaN/Inf inputs, bad shapes or parameters raise a plain ValueError.

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
import typing
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from learning.typed import conforms, expected

from . import clipping, clustering, coordinate, geomed, krum, mean
from ._core import (AggregationError, AggregationResult, Inputs, as_groups, as_held, as_reference, as_updates, as_vector,
                    WitnessRows, as_witness, check_f,
                    require_finite, result)
from .clustering import AGAINST_DRIFT
from .staleness import staleness_weight
from .weighting import DEFAULT_WEIGHT_CAP, cap_weights, check_cap, unit_scale

__all__ = ["AGAINST_DRIFT", "DEFAULT_RULE", "DEFAULT_WEIGHT_CAP", "RULES", "RULE_NAMES", "AggregationError", "AggregationResult",
           "WitnessRows", "aggregate", "check_params", "staleness_weight"]

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


VALUE_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "multikrum": krum.check_multikrum,
    "trimmed_mean": coordinate.check_trimmed_mean,
    "geomed": geomed.check_params,
    "centered_clip": clipping.check_params,
    "clustering": clustering.check_params,
}
"""Per rule, the check of its parameter values; it receives every keyword parameter, defaults included."""
_DEFAULTS: dict[str, dict[str, Any]] = {
    rule: {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}
    for rule, fn in RULES.items()}
"""Each rule's keyword parameters and their defaults, read once (the value check runs every round)."""
_SHARED: dict[str, Any] = {"f": int | None, "weight_cap": float | None}
"""The parameters every rule takes through :func:`aggregate`: the assumed Byzantine count and the weight cap."""


def _check_values(rule: str, params: Mapping[str, Any]) -> None:
    """The rule's own check of its values, with its defaults for what ``params`` leaves out (a
    default can make a given value invalid: a radius list is checked together with the radius)."""
    check = VALUE_CHECKS.get(rule)
    if check is not None:
        defaults = _DEFAULTS[rule]
        check({**defaults, **{k: v for k, v in params.items() if k in defaults}})


def check_params(rule: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first parameter a genesis gives ``rule`` that no round could run
    with: an unknown name, a value of the wrong type (a list stands for a tuple, as JSON has no
    other), or a value the rule refuses. Checked only when a round runs, such a value would skip
    every round of the chain's life."""
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; choose one of {', '.join(RULE_NAMES)}")
    fn = RULES[rule]
    hints = {**{k: v for k, v in typing.get_type_hints(fn).items() if k in _params_of(fn)}, **_SHARED}
    unknown = sorted(set(params) - set(hints))
    if unknown:
        raise ValueError(f"rule_params {unknown} are not parameters of rule {rule} (it takes {sorted(hints)})")
    for name, value in params.items():
        if not conforms(hints[name], value):
            raise ValueError(f"rule_params {name} must be {expected(hints[name])}, got {value!r}")
    check_cap(params.get("weight_cap", DEFAULT_WEIGHT_CAP))
    check_f(params.get("f"), rule)
    _check_values(rule, params)


def _run(fn: Callable[..., AggregationResult], inp: Inputs, params: dict[str, Any]) -> AggregationResult:
    # With extreme inputs (e.g. a zero radius) a ratio in n-space may overflow to +inf, which the
    # rules read as "infinitely far"; the vector itself is checked for finiteness in result().
    with np.errstate(over="ignore"):
        return fn(inp, **params)


def aggregate(rule: str, updates: np.ndarray, weights: np.ndarray | None = None, *,
              trust: np.ndarray | None = None, f: int | None = None, seed: int = 0,
              evaluate: Callable[[np.ndarray], float] | None = None,
              weight_cap: float | None = DEFAULT_WEIGHT_CAP, groups: np.ndarray | None = None,
              reference: np.ndarray | None = None, held: np.ndarray | None = None,
              witness: tuple[np.ndarray, np.ndarray] | None = None, **params: Any) -> AggregationResult:
    """Aggregate ``updates`` (n, d) with ``rule``.

    ``weights`` (n,): sample counts times staleness weights (default all 1); fedavg, trust,
    multikrum, geomed, centered_clip and clustering average with them, the others only select.
    ``trust`` (n,) is required by ``"trust"`` (its weights become ``weights * trust``) and
    ignored otherwise. ``f``: assumed number of Byzantine updates (None = the largest the rule
    supports; too large a value is reduced and reported in ``info``). ``seed`` drives the only
    randomness (k-means++ seeding). ``evaluate`` (validation accuracy of a candidate vector) is
    used by ``"clustering"`` to tune its radius; only its return values' order matters.
    ``weight_cap``: every positive weight is clipped to ``weight_cap`` x the median positive
    weight (of the updates that take part) before the rule runs; None turns the cap off. The
    trust factor is chain state, not a claim, and is applied after the cap. ``params`` are
    rule-specific (see each rule). ``groups`` (d,) names the feature group of every entry of an
    update (:func:`learning.models.feature_groups`: the model's layout); ``"clustering"`` clips
    each accepted update group by group with it, the other rules ignore it. ``reference`` (d,) is
    the direction the global model has recently moved (:func:`learning.round.drift`, read from the
    chain by every verifier); ``"clustering"`` drops updates that point against it, the other
    rules ignore it. ``held`` (n,) bool marks the updates whose senders the chain holds for having
    pointed against it (:func:`learning.round.holds_after`); without strong evidence of a shared
    direction ``"clustering"`` holds only those to zero (None: nobody is held). ``witness``
    ``(norms, owner)`` (:class:`WitnessRows`, chain state from :func:`learning.round.witness_after`)
    holds the feature-group norms of each recent sender's last accepted update (m, G) and, per
    update, its sender's row (-1 for none); ``"clustering"``'s feature clip takes its medians over
    the accepted updates and the rows of every sender none of whose updates is accepted, so a round
    the attackers crowd is not the only witness of how far honest updates move a feature (needs
    ``groups``).

    ``info`` always holds ``weight_cap``, ``weight_limit`` (the clip level in the caller's
    units, None without a cap) and ``weights_clipped`` (indices of the clipped weights).

    Updates with zero weight (or zero trust) are excluded before the rule runs: they are reported
    as rejected with score +inf. Raises ValueError on an unknown rule or parameter, bad shapes,
    NaN/Inf, negative weights, or when every weight is zero; AggregationError (a ValueError)
    when the aggregate would not be finite in float32.
    """
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; choose one of {', '.join(RULE_NAMES)}")
    fn = RULES[rule]
    unknown = set(params) - _params_of(fn)
    if unknown:
        raise ValueError(f"{rule}: unknown parameter(s) {sorted(unknown)}; accepted: {sorted(_params_of(fn))}")
    _check_values(rule, params)
    if evaluate is not None and not callable(evaluate):
        raise ValueError("evaluate must be callable")
    cap = check_cap(weight_cap)
    x = as_updates(updates, check_finite=rule in _CHECK_UP_FRONT)
    n = x.shape[0]
    g = None if groups is None else as_groups(groups, x.shape[1])
    ref = None if reference is None else as_reference(reference, x.shape[1])
    hold = None if held is None else as_held(held, n)
    seen = None if witness is None else as_witness(witness, g, n)
    w = np.ones(n) if weights is None else as_vector(weights, n, "weights")
    live = w > 0
    zero_reason = "zero weight"
    if rule == "trust":
        if trust is None:
            raise ValueError("trust: the trust-weighted rule needs a trust vector")
        t = as_vector(trust, n, "trust")
        zero_reason = "zero trust or weight"
        live &= t > 0
    if not live.any():
        raise ValueError(f"{rule}: every update has zero weight")
    w, capping = cap_weights(w, live, cap)
    w = unit_scale(np.where(live, w, 0.0))
    if rule == "trust":
        w = unit_scale(w * unit_scale(t))
    if live.all():
        inner = _run(fn, Inputs(x, w, f, int(seed), evaluate, g, ref, hold, seen), params)
        inner.info.update(capping)
        return inner
    if rule not in _CHECK_UP_FRONT:
        require_finite(x)                    # excluded rows must be valid too
    rows = np.flatnonzero(live)
    inner = _run(fn, Inputs(np.ascontiguousarray(x[rows]), w[rows], f, int(seed), evaluate, g, ref,
                            None if hold is None else hold[rows], None if seen is None else seen.subset(rows)), params)
    accepted = np.zeros(n, dtype=bool)
    accepted[rows] = inner.accepted
    scores = np.full(n, np.inf)
    scores[rows] = inner.scores
    reasons = [zero_reason] * n
    for pos, reason in zip(rows.tolist(), inner.reasons):
        reasons[pos] = reason
    return result(inner.vector, accepted, scores, reasons, **inner.info, **capping, excluded=int(n - rows.size))
