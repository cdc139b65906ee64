"""The clustering rule when attackers hold the majority of one round.

Asynchronous arrivals put a varying share of attackers in each round: with 8 attackers among 20
nodes and 10 updates per aggregation, some rounds hold 6 or 7 of them. Every majority test then
takes their side. Reproduced in the adversary benchmark's asynchronous rows (the MLP on
Fashion-MNIST, sign flipping at 40%, seed 0): the first aggregation held 6 flippers of 10, the
rule accepted them, and the model ended at 10% (chance). The public set tells the sides apart,
and the guard asks it: a best aggregate that validates worse than the current model is refused,
the groups are tried again with each as the reference, and the round is skipped when none holds.

Attackers who only stall training (IPM: a small step against the honest mean) pass that guard: a
round of theirs validates about as well as the current model. Reproduced in the same rows (IPM
at 40%, seed 0): in 11 of 20 aggregations they held half the round or more, the drift test
abstained (most updates went against the model's drift, cosines -0.4 to -0.7 against +0.2 to
+0.6), and the run ended at 50.4% against 78.7% without attackers. Where the drift test
abstains but a group goes the model's way with evidence, the contested pass (which drops updates
against the drift whatever the majority) competes, and the better-validating aggregate wins.
"""

from __future__ import annotations

import numpy as np
import pytest

from learning.aggregation import aggregate
from learning.aggregation.direction import split_scores


def _outvoted_round(rng: np.random.Generator, d: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Four honest updates (a common direction, each with its own label skew) and six attackers
    sending the negation of an honest-looking update, each with its own noise."""
    common = rng.normal(size=d)
    honest = common + 0.8 * rng.normal(size=(4, d))
    flipped = -(common + 0.8 * rng.normal(size=(6, d)))
    return np.concatenate([honest, flipped]).astype(np.float32), common


def _public_set(common: np.ndarray):
    """Validation of the model moved by ``v``: 0.5 for the current model, up to 1 along the
    honest direction, down to 0 against it."""
    def evaluate(v: np.ndarray) -> float:
        return float(0.5 + 0.5 * v @ common / (np.linalg.norm(v) * np.linalg.norm(common) + 1e-30))
    return evaluate


def test_an_honest_minority_wins_the_round_the_public_set_decides() -> None:
    for seed in range(10):
        x, common = _outvoted_round(np.random.default_rng(seed))
        blind = aggregate("clustering", x, np.ones(10), seed=seed, evaluate=_public_set(common), guard=0.0)
        assert blind.accepted[4:].all() and not blind.accepted[:4].any()     # the weakness, guard off
        res = aggregate("clustering", x, np.ones(10), seed=seed, evaluate=_public_set(common))
        assert res.accepted[:4].all() and not res.accepted[4:].any(), res.reasons
        assert res.info["contested"] is True
        assert float(res.vector @ common) > 0


def test_a_round_no_candidate_of_which_validates_is_skipped() -> None:
    """Every update harms the public set: no group to fall back on, so the rule refuses the round
    (a chain skips it: the model stays, nobody is rewarded or penalized)."""
    rng = np.random.default_rng(0)
    common = rng.normal(size=2000)
    x = (-(common + 0.8 * rng.normal(size=(10, 2000)))).astype(np.float32)
    with pytest.raises(ValueError, match="below the current model"):
        aggregate("clustering", x, np.ones(10), seed=0, evaluate=_public_set(common))


def _stalling_round(rng: np.random.Generator, d: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Four honest updates (two of each of two label skews) and six IPM attackers (each minus half
    the honest mean, with its own noise): the attackers are the round's majority."""
    common, skew = rng.normal(size=d), rng.normal(size=d)
    honest = common + np.array([1, 1, -1, -1])[:, None] * skew + 0.3 * rng.normal(size=(4, d))
    ipm = -0.5 * honest.mean(axis=0) + 0.3 * rng.normal(size=(6, d))
    return np.concatenate([honest, ipm]).astype(np.float32), common


def _progress(common: np.ndarray):
    """Validation that rewards how far the model moves along the honest direction (0.5 for the
    current model) and barely notices a step back (at most 0.02, less than the guard): late in
    training a stalled round validates about as well as the current model."""
    unit = common / np.linalg.norm(common)

    def evaluate(v: np.ndarray) -> float:
        return float(0.5 + 0.4 * np.tanh(max(float(v @ unit) / np.linalg.norm(common), -0.05)))
    return evaluate


def test_attackers_who_stall_half_a_round_lose_it_to_the_drift() -> None:
    for seed in range(10):
        x, common = _stalling_round(np.random.default_rng(seed))
        drift = (common + 0.5 * np.random.default_rng(100 + seed).normal(size=common.size)).astype(np.float32)
        blind = aggregate("clustering", x, np.ones(10), seed=seed, evaluate=_progress(common))
        assert blind.accepted[4:].all()              # without the drift the attackers win the round
        res = aggregate("clustering", x, np.ones(10), seed=seed, evaluate=_progress(common), reference=drift)
        assert res.accepted[:4].all() and not res.accepted[4:].any(), res.reasons
        assert res.info["contested"] is True
        assert _progress(common)(res.vector) > _progress(common)(blind.vector)


def test_a_contested_drift_needs_a_group_with_evidence() -> None:
    cos = np.array([0.3, 0.4, -0.5, -0.5, -0.6])
    rows = np.arange(5)
    scores = split_scores(cos, rows, 8.0, 10_000, 2)
    assert scores is not None and (scores[2:] > 1).all() and (scores[:2] < 1).all()
    assert split_scores(cos, rows, 8.0, 10_000, 3) is None       # too few go the drift's way
    assert split_scores(cos, rows, 8.0, 100, 2) is None          # 0.35 is chance in 100 dimensions


def test_the_guard_costs_an_honest_round_nothing() -> None:
    """Where the aggregate does not validate worse than the current model and most updates go the
    model's way, the guard changes no decision: the same result as with it off, one first pass."""
    for seed in range(10):
        rng = np.random.default_rng(seed)
        common = rng.normal(size=2000)
        x = (common + 0.8 * rng.normal(size=(10, 2000))).astype(np.float32)
        drift = (common + rng.normal(size=2000)).astype(np.float32)
        on = aggregate("clustering", x, np.ones(10), seed=seed, evaluate=_public_set(common), reference=drift)
        off = aggregate("clustering", x, np.ones(10), seed=seed, evaluate=_public_set(common), guard=0.0,
                        reference=drift)
        assert (on.accepted == off.accepted).all() and np.array_equal(on.vector, off.vector)
        assert on.info["contested"] is False


def test_the_guard_must_be_a_finite_non_negative_margin() -> None:
    x = np.ones((4, 10), dtype=np.float32)
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="guard"):
            aggregate("clustering", x, np.ones(4), seed=0, guard=bad)
