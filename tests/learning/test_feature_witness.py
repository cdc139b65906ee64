"""The feature clip's witness: one row per recent sender, so a round the attackers crowd does not
set how far a feature may move (asynchronous arrivals give some rounds 6 or 7 attackers of 10)."""

from __future__ import annotations

import numpy as np
import pytest

from learning.aggregation import WitnessRows, aggregate
from learning.aggregation.exact import group_norms
from learning.round import WITNESS_HORIZON, feature_norms, witness_after, witness_rows

GROUPS = np.repeat(np.arange(8), 25)          # 8 feature groups of 25 weights; group 0 is the trigger's
D = GROUPS.size


def _updates(rng: np.random.Generator, n: int, trigger: float) -> np.ndarray:
    """``n`` updates sharing one direction outside the trigger group, each with its own noise; the
    trigger group moved by ``trigger`` per weight (honest data hardly shows the trigger: 0.002)."""
    shared = np.where(GROUPS == 0, 0.0, 0.2)
    x = shared + 0.05 * rng.standard_normal((n, D))
    x[:, GROUPS == 0] = trigger * (1.0 + 0.1 * rng.standard_normal((n, 25)))
    return x.astype(np.float32)


def _trigger_push(vector: np.ndarray) -> float:
    return float(np.linalg.norm(vector[GROUPS == 0]))


def test_a_crowded_round_cannot_set_the_trigger_groups_median() -> None:
    rng = np.random.default_rng(3)
    round_ = np.vstack([_updates(rng, 6, 0.2), _updates(rng, 4, 0.002)])     # 6 attackers, 4 honest
    absent = _updates(rng, 12, 0.002)                                        # 12 honest senders not in it
    rows = np.vstack([group_norms(absent, GROUPS, 8), group_norms(round_[:2], GROUPS, 8)])
    owner = np.array([12, 13] + [-1] * 8)        # two attackers of the round were accepted before
    without = aggregate("clustering", round_, np.ones(10), seed=0, groups=GROUPS)
    with_ = aggregate("clustering", round_, np.ones(10), seed=0, groups=GROUPS, witness=(rows, owner))
    assert without.accepted[:6].all() and with_.accepted[:6].all()    # no test drops them: they are most
    honest = _trigger_push(_updates(np.random.default_rng(0), 1, 0.002)[0])
    assert _trigger_push(without.vector) > 50 * honest                # the attackers' median is their own
    assert _trigger_push(with_.vector) < 1.6 * honest                 # one row per sender: 14 honest, 6 not
    outside = GROUPS != 0
    assert np.allclose(with_.vector[outside], without.vector[outside], rtol=0.2, atol=0.02)


def test_a_sender_stands_by_its_row_unless_one_of_its_updates_is_accepted() -> None:
    norms = np.arange(12, dtype=np.float64).reshape(4, 3)
    witness = WitnessRows(norms, np.array([2, -1, 2, 0]))      # updates 0 and 2 are one sender's (row 2)
    assert witness.standing(np.array([False, True, False, False])).tolist() == norms[[0, 1, 2, 3]].tolist()
    assert witness.standing(np.array([False, False, True, True])).tolist() == norms[[1, 3]].tolist()
    assert witness.subset(np.array([1, 3])).owner.tolist() == [-1, 0]


@pytest.mark.parametrize("bad, why", [
    ((np.ones((2, 7)), np.array([0, -1, 1])), "shape"),
    ((np.ones((2, 8)), np.array([0, 2, 1])), "owner"),
    ((np.full((2, 8), np.nan), np.array([0, -1, 1])), "finite"),
    ((-np.ones((2, 8)), np.array([0, -1, 1])), "non-negative"),
    (np.ones((2, 8)), "pair"),
])
def test_a_malformed_witness_is_refused_with_its_reason(bad, why: str) -> None:
    x = _updates(np.random.default_rng(1), 3, 0.002)
    with pytest.raises(ValueError, match=why):
        aggregate("clustering", x, np.ones(3), groups=GROUPS, witness=bad)
    with pytest.raises(ValueError, match="feature groups"):
        aggregate("clustering", x, np.ones(3), witness=(np.ones((2, 8)), np.array([0, -1, 1])))


def test_rows_come_from_accepted_updates_only_and_lapse_after_the_horizon() -> None:
    x = _updates(np.random.default_rng(2), 3, 0.002)
    norms = feature_norms(x, GROUPS)
    assert np.array_equal(norms, group_norms(x, GROUPS, 8))
    book = witness_after({}, ["a", "b", "c"], norms, [True, False, True], 5)
    assert sorted(book) == ["a", "c"] and book["a"][0] == 5 and np.array_equal(book["c"][1], norms[2])
    book = witness_after(book, ["a"], norms[1:2], [True], 5 + WITNESS_HORIZON - 1)
    assert sorted(book) == ["a", "c"]
    book = witness_after(book, ["b"], norms[:1], [False], 5 + WITNESS_HORIZON)
    assert sorted(book) == ["a"]                     # c's row from round 5 lapsed; b was not accepted
    rows = witness_rows({**book, "c": (30, np.ones(8))}, ["c", "z", "a"])
    assert rows is not None and rows.owner.tolist() == [1, -1, 0] and rows.norms.shape == (2, 8)
    assert witness_rows({}, ["a"]) is None
