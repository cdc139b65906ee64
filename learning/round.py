"""One aggregation round: admitted updates in, the new global model (or a skipped round) out.

The step a chain's proposer runs and every verifying delegate re-runs (``node/fl/round.py`` wraps
it in the block payload), and the step the simulator runs after every round of local work.

* Weights: each update's claimed sample count times its staleness discount ``(1 + s)^-a``
  (FedAsync's polynomial, in decimal arithmetic so every CPU gets the same float). The discount
  only weighs updates against each other; the step is ``server_lr`` times the aggregate whatever
  the staleness (see ``docs/decisions.md``).
* Standing (:mod:`learning.standing`): with the default rule each weight is also scaled by its
  sender's standing, which falls when its last accepted updates kept scoring far above their
  rounds' lower quartile; every verifier derives it from final blocks, the simulator from its rounds.
* Trust is the sender's stake share (paper eq. 9), chain state rather than a claim; only the
  ``trust`` rule uses it.
* The rule is :func:`learning.aggregation.aggregate`, which caps every weight at a multiple of
  the median first.
* The rule also gets the round's *reference*: how the global model moved over the staleness
  window (:func:`drift`: the current model minus the oldest base an update may still build on),
  which every verifier reads from the chain's models; the default rule drops updates that point
  against it.
* Holds (:func:`holds_after`): a sender whose update the rule dropped against the model's drift is
  *held* until an update of it is accepted; without strong evidence of a shared direction the
  default rule's drift test holds only them to zero, anyone else to a floor below it
  (``learning/aggregation/direction.py`` says why). Every verifier derives the holds from final blocks, the simulator from its rounds.
* Witnesses (:func:`witness_after`): the feature-group norms of each sender's last accepted update
  within :data:`WITNESS_HORIZON`. The default rule's feature clip takes its medians over the round's
  accepted updates and the witness rows of every other recent sender, one row per sender, so
  attackers who are fast enough to fill most of a round do not set how far a feature may move.
* A round in which nobody carries weight leaves the model as it was (every update "zero weight").
  A round whose rule raises (``AggregationError`` is a ``ValueError``) or whose new model is not
  finite is *skipped* with its reason: model unchanged, nobody rewarded or penalized.

The same inputs in the same order give the same bits on every machine (the aggregation library's
guarantee, and float32 arithmetic here), provided ``evaluate`` returns the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any
from dataclasses import dataclass
from functools import partial

import numpy as np

from learning.aggregation import AGAINST_DRIFT, AggregationResult, WitnessRows, aggregate, staleness_weight
from learning.aggregation.exact import group_norms
from learning.hierarchy import Partial, run_hierarchy
from learning.settings import FLSettings

Aggregator = Callable[..., AggregationResult]
"""``aggregate``'s signature: benchmarks pass a wrapper or another library's rule."""


@dataclass(frozen=True)
class RoundOutcome:
    """What a round made of its updates, in their order."""

    model: np.ndarray          # the new global model (the old one, the same object, if it did not move)
    weights: np.ndarray        # (n,) float64: samples x staleness discount x standing, as the payload lists them
    accepted: np.ndarray       # (n,) bool
    reasons: list[str]         # '' when accepted
    scores: np.ndarray         # (n,) float64 suspicion (higher = more suspicious; nan when skipped)
    skipped: str = ""          # why the round was skipped ('' if it was not)
    partials: tuple[Partial, ...] = ()   # a hierarchical round's clusters (learning.hierarchy), in order


def drift(model: np.ndarray, oldest: np.ndarray | None) -> np.ndarray | None:
    """How the model moved since ``oldest`` (the oldest base in the staleness window), float32,
    elementwise (the same bits everywhere); None without an older model or when it did not move."""
    if oldest is None:
        return None
    moved = np.subtract(model, oldest, dtype=np.float32)
    return moved if moved.any() else None


HOLD_HORIZON = 100
"""Rounds (a chain: heights) a hold lasts after the sender's last drop against the drift: the
record stays bounded by the senders of the last hundred rounds, while a sender dropped every
round stays held."""


def holds_after(held: Mapping[Hashable, int], senders: Sequence[Hashable], accepted: Sequence[bool],
                reasons: Sequence[str], now: int) -> dict[Hashable, int]:
    """The holds after round ``now`` (sender -> the round of its last drop against the drift): a
    sender this round dropped against the drift is held from ``now`` (even if another of its
    updates was accepted); otherwise a sender with an accepted update is released; holds older
    than :data:`HOLD_HORIZON` lapse."""
    dropped = {s for s, r in zip(senders, reasons) if r == AGAINST_DRIFT}
    released = {s for s, a in zip(senders, accepted) if a} - dropped
    kept = {s: h for s, h in held.items() if s not in released and h > now - HOLD_HORIZON}
    return {**kept, **dict.fromkeys(dropped, now)}


WITNESS_HORIZON = 20
"""Rounds (a chain: heights) a sender's witness row lasts after its last accepted update."""

Witnesses = dict[Hashable, tuple[int, Any]]
"""Sender -> (round of its last accepted update, what stands for it: in the simulator that update's
(G,) float64 feature-group norms, on a chain the update's id, whose norms a node computes)."""


def feature_norms(updates: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n, G) exact feature-group norms of ``updates`` (n, d): what a witness row holds."""
    return group_norms(np.ascontiguousarray(updates, dtype=np.float32), groups, int(groups.max()) + 1)


def witness_after(witness: Mapping[Hashable, tuple[int, Any]], senders: Sequence[Hashable], rows: Sequence[Any],
                  accepted: Sequence[bool], now: int) -> Witnesses:
    """The witnesses after round ``now``: each sender with an accepted update is witnessed by that
    update's entry of ``rows``; witnesses older than :data:`WITNESS_HORIZON` lapse."""
    kept = {s: row for s, row in witness.items() if row[0] > now - WITNESS_HORIZON}
    kept.update({s: (now, row) for s, row, ok in zip(senders, rows, accepted) if ok})
    return kept


def witness_rows(witness: Mapping[Hashable, tuple[int, np.ndarray]], senders: Sequence[Hashable]) -> WitnessRows | None:
    """The rule's witness for a round of updates from ``senders``: every row, in sender order, and
    per update the row of its sender (-1 for none); None when there is no row."""
    if not witness:
        return None
    order = sorted(witness, key=str)
    row_of = {s: i for i, s in enumerate(order)}
    return WitnessRows(np.stack([witness[s][1] for s in order]),
                       np.array([row_of.get(s, -1) for s in senders], dtype=np.int64))


def round_weights(samples: Sequence[float], staleness: Sequence[float], staleness_a: float,
                  standing: Sequence[float] | None = None) -> np.ndarray:
    """Sample counts times the staleness discount ``(1 + s)^-a`` times each sender's standing
    (:mod:`learning.standing`; 1 without), float64, the same on every CPU."""
    discount = np.asarray(staleness_weight(np.asarray(staleness, dtype=np.float64), staleness_a), dtype=np.float64)
    weights = np.asarray(samples, dtype=np.float64) * discount
    return weights if standing is None else weights * np.asarray(standing, dtype=np.float64)


def stake_changes(settings: FLSettings, outcome: RoundOutcome) -> list[int]:
    """Stake each update's sender gains (accepted) or loses (rejected); nothing in a skipped round."""
    if outcome.skipped:
        return [0] * len(outcome.reasons)
    return [settings.reward_accepted if ok else -settings.penalty_rejected for ok in outcome.accepted.tolist()]


def skipped(model: np.ndarray, weights: np.ndarray, why: str) -> RoundOutcome:
    """The model unchanged, every update not accepted because the round was skipped."""
    n = len(weights)
    return RoundOutcome(model, weights, np.zeros(n, dtype=bool), [f"round skipped: {why}"] * n,
                        np.full(n, np.nan), skipped=why)


def run_round(settings: FLSettings, model: np.ndarray, updates: np.ndarray, samples: Sequence[float],
              staleness: Sequence[float], trust: Sequence[float], *, seed: int,
              evaluate: Callable[[np.ndarray], float] | None = None,
              aggregator: Aggregator = aggregate, senders: Sequence[object] | None = None,
              groups: np.ndarray | None = None, reference: np.ndarray | None = None,
              held: Sequence[bool] | None = None, witness: WitnessRows | None = None,
              standing: Sequence[float] | None = None) -> RoundOutcome:
    """Aggregate ``updates`` (n, d) onto ``model`` with the settings' rule.

    ``samples``, ``staleness`` (model versions since each update's base) and ``trust`` (each
    sender's stake share) are per update. ``evaluate`` scores a candidate *model* (accuracy on the
    public evaluation set); the clustering rule tunes its radius with it. The rule's parameters,
    the assumed Byzantine count ``f`` among them, are the settings' ``rule_params``. ``seed``
    drives the rule's only randomness (a chain uses the block height).

    With a genesis ``hierarchy`` and at least its threshold of updates, the round is hierarchical
    (:mod:`learning.hierarchy`): ``senders`` (one id per update) then place updates in clusters.
    ``groups`` is the model's feature layout (:func:`learning.models.feature_groups`), which the
    default rule's feature clip needs; every rule run of the round gets it, and ``reference``
    (:func:`drift`) as well, and ``held`` (per update: does the chain hold its sender, from
    :func:`holds_after`), and ``witness`` (:func:`witness_rows`). ``standing`` (per update, its
    sender's :func:`learning.standing.factors`) scales the weights.
    """
    n = len(samples)
    weights = round_weights(samples, staleness, settings.staleness_a, standing)
    if n == 0:
        return RoundOutcome(model, weights, np.zeros(0, dtype=bool), [], np.zeros(0))
    trusts = np.asarray(trust, dtype=np.float64)
    effective = weights * trusts if settings.rule == "trust" else weights
    if not (effective > 0).any():  # nobody carries weight (e.g. every sender has zero stake): no step
        return RoundOutcome(model, weights, np.zeros(n, dtype=bool), ["zero weight"] * n, np.full(n, np.inf))
    if groups is not None:
        aggregator = partial(aggregator, groups=groups)
    if reference is not None:
        aggregator = partial(aggregator, reference=reference)
    if groups is None:
        witness = None                     # nothing to clip feature by feature, nothing to witness
    mask = None if held is None else np.asarray(held, dtype=bool)
    lr = np.float32(settings.server_lr)
    rule_evaluate = None if evaluate is None else (lambda delta: evaluate(model + lr * delta))
    hierarchy = settings.hierarchy_rule
    if hierarchy is not None and hierarchy.applies(n):
        if senders is None or len(senders) != n:
            raise ValueError("a hierarchical round needs one sender id per update")
        try:
            h = run_hierarchy(aggregator, hierarchy, settings.rule, settings.rule_params,
                              np.asarray(updates, dtype=np.float32), weights, trusts, senders, seed, rule_evaluate,
                              mask, witness)
        except ValueError as exc:
            return skipped(model, weights, f"aggregation failed: {exc}")
        return _moved(model, lr, h.vector, weights, h.accepted, h.reasons, h.scores, h.partials)
    try:
        result = aggregator(settings.rule, np.asarray(updates, dtype=np.float32), weights, trust=trusts, seed=seed,
                            evaluate=rule_evaluate, held=mask, witness=witness,
                            **settings.rule_params)
    except ValueError as exc:  # the library's AggregationError (no finite aggregate) is a ValueError
        return skipped(model, weights, f"aggregation failed: {exc}")
    return _moved(model, lr, result.vector, weights, result.accepted, [str(r) for r in result.reasons], result.scores)


def _moved(model: np.ndarray, lr: np.float32, vector: np.ndarray, weights: np.ndarray, accepted: np.ndarray,
           reasons: list[str], scores: np.ndarray, partials: tuple[Partial, ...] = ()) -> RoundOutcome:
    """The model moved by ``lr`` times the aggregate, or a skipped round if that is not finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        new_model = (model + lr * vector).astype(np.float32)
    if not np.isfinite(new_model).all():
        return skipped(model, weights, "the new model is not finite")
    return RoundOutcome(new_model, weights, np.asarray(accepted, dtype=bool), reasons,
                        np.asarray(scores, dtype=np.float64), partials=partials)
