"""Robustness properties of the Byzantine-tolerant rules and the clustering defence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from learning.aggregation import aggregate
from learning.attacks import craft_updates


def _honest(n: int, d: int, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=d)
    return (mu + spread * rng.normal(size=(n, d))).astype(np.float32), mu


@settings(max_examples=40, deadline=None)
@given(data=st.data(), rule=st.sampled_from(["median", "trimmed_mean"]))
def test_coordinate_rules_stay_inside_the_honest_range(data: st.DataObject, rule: str) -> None:
    n = data.draw(st.integers(3, 15))
    bad = data.draw(st.integers(0, (n - 1) // 2))                  # f < n/2 outliers
    d = data.draw(st.integers(1, 6))
    honest = data.draw(arrays(np.float32, (n - bad, d), elements=st.floats(-10, 10, width=32)))
    outliers = data.draw(arrays(np.float32, (bad, d), elements=st.floats(-1e6, 1e6, width=32)))
    x = np.concatenate([outliers, honest])
    kw = {"f": bad} if rule == "trimmed_mean" else {}
    vec = aggregate(rule, x, **kw).vector
    assert (vec >= honest.min(axis=0)).all() and (vec <= honest.max(axis=0)).all()


@pytest.mark.parametrize("rule", ["krum", "multikrum", "bulyan"])
def test_selection_rules_pick_honest_against_separated_outliers(rule: str) -> None:
    x, _ = _honest(20, 50, seed=1, spread=0.1)
    rng = np.random.default_rng(2)
    x[:4] = 30.0 + rng.normal(size=(4, 50))                          # well separated outliers
    res = aggregate(rule, x, f=4)
    assert not res.accepted[:4].any() and res.accepted[4:].sum() >= 1
    assert res.scores[:4].min() > res.scores[4:].max()
    assert np.abs(res.vector - x[4:].mean(axis=0)).max() < 0.5


def test_krum_selection_is_honest_even_for_colluding_duplicates() -> None:
    x, _ = _honest(11, 30, seed=4, spread=0.1)
    x[:3] = 25.0                                                     # three identical attackers
    res = aggregate("krum", x, f=3)
    assert int(np.flatnonzero(res.accepted)[0]) >= 3


@pytest.mark.parametrize("attack", ["sign_flip", "gaussian", "alie", "ipm", "minmax", "scale"])
def test_clustering_rejects_planted_malicious_group(attack: str) -> None:
    x, _ = _honest(30, 400, seed=5, spread=1.0)
    rng = np.random.default_rng(6)
    x[:8] = craft_updates(attack, x[:8], x[8:], rng, **({"scale": 3.0} if attack == "sign_flip" else {}))
    res = aggregate("clustering", x)
    assert not res.accepted[:8].any(), res.reasons[:8]
    assert res.accepted[8:].mean() >= 0.9
    assert all(r.startswith("clustering: ") for r in res.reasons[:8])
    assert res.scores[:8].min() > 1.0
    honest_mean = x[8:].astype(np.float64).mean(axis=0)
    fedavg_err = np.linalg.norm(aggregate("fedavg", x).vector - honest_mean)
    assert np.linalg.norm(res.vector - honest_mean) < 0.5 * fedavg_err


def test_clustering_keeps_everyone_without_attack() -> None:
    x, _ = _honest(25, 300, seed=8)
    res = aggregate("clustering", x)
    assert res.accepted.mean() >= 0.9
    assert res.info["near_copies"] == 0


def test_clustering_separates_a_near_copy_group_hiding_at_the_mean() -> None:
    x, _ = _honest(20, 200, seed=9)
    x[:5] = x[5:].mean(axis=0) + np.random.default_rng(1).normal(scale=1e-3, size=(5, 200))
    res = aggregate("clustering", x)
    assert res.reasons[:5] == ["clustering: colluding group"] * 5
    assert aggregate("clustering", x, collusion=0.0).accepted[:5].all()   # test can be switched off


def test_clustering_never_drops_more_than_half() -> None:
    x, _ = _honest(10, 50, seed=10)
    x[:6] = 7.0                                                       # majority of copies
    res = aggregate("clustering", x)
    assert res.accepted.sum() >= 4


def test_clustering_radius_tuned_by_validation_callback() -> None:
    x, mu = _honest(30, 100, seed=11, spread=0.5)
    x[:6] = -4.0 * x[:6]
    calls: list[np.ndarray] = []

    def evaluate(vec: np.ndarray) -> float:
        calls.append(vec)
        return -float(np.linalg.norm(vec - mu))        # "accuracy": closeness to the true mean

    res = aggregate("clustering", x, evaluate=evaluate)
    assert 1 <= len(calls) <= 5
    assert res.info["validation"] == max(-float(np.linalg.norm(v - mu)) for v in calls)
    assert res.info["radius"] in (3.0, 2.0, 4.0, 1.5, 6.0)
    assert not res.accepted[:6].any()
    with pytest.raises(ValueError, match="non-finite"):
        aggregate("clustering", x, evaluate=lambda v: float("nan"))


def test_clustering_seed_changes_nothing_on_clear_structure() -> None:
    x, _ = _honest(24, 64, seed=12, spread=0.2)
    x[:6] += 20.0
    a, b = aggregate("clustering", x, seed=1), aggregate("clustering", x, seed=2)
    assert np.array_equal(a.accepted, b.accepted) and not a.accepted[:6].any()


@pytest.mark.parametrize("rule", ["geomed", "centered_clip", "median"])
def test_robust_centres_resist_a_minority_of_huge_updates(rule: str) -> None:
    x, _ = _honest(21, 30, seed=13, spread=0.3)
    x[:6] = 1e4
    vec = aggregate(rule, x).vector
    assert np.linalg.norm(vec - x[6:].mean(axis=0)) < 3.0
    assert aggregate(rule, x).scores[:6].min() > aggregate(rule, x).scores[6:].max()


def test_bulyan_coordinate_phase_averages_the_values_closest_to_the_median() -> None:
    from learning.aggregation.coordinate import closest_to_median_mean
    col = np.array([[-1.0], [-1.0], [0.0], [0.5], [1.0]], dtype=np.float32)
    # median 0; nearest three: 0, 0.5, then -1 (tie with 1 goes to the lower value)
    assert closest_to_median_mean(col, np.arange(5), 3)[0] == np.float32(-0.5 / 3)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_bulyan_coordinate_phase_matches_brute_force(data: st.DataObject) -> None:
    from learning.aggregation.coordinate import closest_to_median_mean
    r = data.draw(st.integers(1, 12))
    beta = data.draw(st.integers(1, r))
    x = data.draw(arrays(np.float32, (r, 3), elements=st.integers(-5, 5).map(float)))   # ties are common
    got = closest_to_median_mean(x, np.arange(r), beta)
    for j in range(3):
        col = np.sort(x[:, j].astype(np.float64))
        med = np.median(col)
        # beta nearest by distance; ties broken towards the lower value
        nearest = sorted(col, key=lambda v: (abs(v - med), v))[:beta]
        assert got[j] == np.float32(np.sum(np.sort(nearest)) / beta)
