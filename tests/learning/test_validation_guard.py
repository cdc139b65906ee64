"""The clustering rule when attackers hold the majority of one round.

Asynchronous arrivals put a varying share of attackers in each round: with 8 attackers among 20
nodes and 10 updates per aggregation, some rounds hold 6 or 7 of them. Every majority test then
takes their side. Reproduced in the adversary benchmark's asynchronous rows (the MLP on
Fashion-MNIST, sign flipping at 40%, seed 0): the first aggregation held 6 flippers of 10, the
rule accepted them, and the model ended at 10% (chance). The public set tells the sides apart,
and the guard asks it: a best aggregate that validates worse than the current model is refused,
the groups are tried again with each as the reference, and the round is skipped when none holds.
"""

from __future__ import annotations

import numpy as np
import pytest

from learning.aggregation import aggregate


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


def test_the_guard_costs_an_honest_round_nothing() -> None:
    """Where the aggregate does not validate worse than the current model, the guard changes no
    decision: the same result as with it off, one first pass."""
    for seed in range(10):
        rng = np.random.default_rng(seed)
        common = rng.normal(size=2000)
        x = (common + 0.8 * rng.normal(size=(10, 2000))).astype(np.float32)
        on = aggregate("clustering", x, np.ones(10), seed=seed, evaluate=_public_set(common))
        off = aggregate("clustering", x, np.ones(10), seed=seed, evaluate=_public_set(common), guard=0.0)
        assert (on.accepted == off.accepted).all() and np.array_equal(on.vector, off.vector)
        assert on.info["contested"] is False


def test_the_guard_must_be_a_finite_non_negative_margin() -> None:
    x = np.ones((4, 10), dtype=np.float32)
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="guard"):
            aggregate("clustering", x, np.ones(4), seed=0, guard=bad)
