"""Aggregation API: validation, known answers, determinism and permutation invariance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from learning.aggregation import DEFAULT_RULE, RULE_NAMES, AggregationResult, aggregate, staleness_weight

ALL_RULES = list(RULE_NAMES)


def _updates(n: int = 12, d: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _run(rule: str, x: np.ndarray, **kw) -> AggregationResult:
    if rule == "trust" and "trust" not in kw:
        kw["trust"] = np.linspace(0.5, 1.0, x.shape[0])
    return aggregate(rule, x, **kw)


def test_rule_names_and_default() -> None:
    assert RULE_NAMES == ("fedavg", "trust", "krum", "multikrum", "median", "trimmed_mean", "geomed", "bulyan",
                          "centered_clip", "clustering")
    assert DEFAULT_RULE in RULE_NAMES


@pytest.mark.parametrize("rule", ALL_RULES)
def test_result_shapes_and_types(rule: str) -> None:
    x = _updates()
    res = _run(rule, x)
    assert res.vector.shape == (40,) and res.vector.dtype == np.float32
    assert res.accepted.shape == (12,) and res.accepted.dtype == bool and res.accepted.any()
    assert res.scores.shape == (12,) and res.scores.dtype == np.float64 and np.isfinite(res.scores).all()
    assert len(res.reasons) == 12
    assert all((r == "") == a for r, a in zip(res.reasons, res.accepted))


@pytest.mark.parametrize("rule", ALL_RULES)
def test_bit_identical_on_repeat(rule: str) -> None:
    x = _updates(15, 300, seed=3)
    x[:3] += 4.0
    w = np.arange(1, 16, dtype=np.float64)
    a, b = _run(rule, x, weights=w, seed=7), _run(rule, x.copy(), weights=w.copy(), seed=7)
    assert a.vector.tobytes() == b.vector.tobytes()
    assert np.array_equal(a.accepted, b.accepted) and a.reasons == b.reasons
    assert a.scores.tobytes() == b.scores.tobytes()


@pytest.mark.parametrize("rule", ALL_RULES)
def test_invalid_input_raises(rule: str) -> None:
    x = _updates()
    bad = x.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf in rows \\[2\\]"):
        _run(rule, bad)
    inf = x.copy()
    inf[4, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        _run(rule, inf)
    for shape in [(0, 4), (4, 0), (5,), (2, 3, 4)]:
        with pytest.raises(ValueError):
            _run(rule, np.zeros(shape, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or Inf in rows \\[2\\]"):
        _run(rule, bad, weights=np.r_[1.0, 1.0, 0.0, np.ones(9)])     # even when excluded
    with pytest.raises(ValueError, match="weights"):
        _run(rule, x, weights=np.ones(11))
    with pytest.raises(ValueError, match="weights"):
        _run(rule, x, weights=-np.ones(12))
    with pytest.raises(ValueError, match="zero weight"):
        _run(rule, x, weights=np.zeros(12))


def test_unknown_rule_and_parameter() -> None:
    with pytest.raises(ValueError, match="unknown aggregation rule"):
        aggregate("mean", _updates())
    with pytest.raises(ValueError, match="unknown parameter"):
        aggregate("krum", _updates(), beta=0.2)
    with pytest.raises(ValueError, match="trust vector"):
        aggregate("trust", _updates())
    with pytest.raises(ValueError, match="non-negative integer"):
        aggregate("krum", _updates(), f=-1)
    with pytest.raises(ValueError, match="beta"):
        aggregate("trimmed_mean", _updates(), beta=0.5)


def test_fedavg_known_answer_and_float64_accumulation() -> None:
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, -2.0]], dtype=np.float32)
    res = aggregate("fedavg", x, np.array([1.0, 1.0, 2.0]), weight_cap=None)
    np.testing.assert_array_equal(res.vector, np.array([3.5, 1.0], dtype=np.float32))
    big = np.array([[1e8], [1.0], [-1e8], [1.0]], dtype=np.float32)
    assert aggregate("fedavg", big).vector[0] == np.float32(0.5)   # float32 running sum would give 0 or 1


def test_trust_weighting_is_trust_times_weights() -> None:
    x = np.array([[0.0], [10.0]], dtype=np.float32)
    res = aggregate("trust", x, np.array([1.0, 3.0]), trust=np.array([3.0, 1.0]), weight_cap=None)
    assert res.vector[0] == np.float32(5.0)
    res = aggregate("trust", x, trust=np.array([1.0, 0.0]))
    assert res.vector[0] == 0.0 and res.accepted.tolist() == [True, False]
    assert res.reasons[1] == "zero trust or weight" and res.scores[1] == np.inf


def test_zero_weight_updates_are_excluded_before_the_rule() -> None:
    x = _updates(10, 20)
    x[0] = 1000.0
    res = aggregate("fedavg", x, np.r_[0.0, np.ones(9)])
    np.testing.assert_allclose(res.vector, x[1:].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert not res.accepted[0] and res.reasons[0] == "zero weight" and res.info["excluded"] == 1


def test_median_and_trimmed_mean_known_answers() -> None:
    x = np.array([[1, 10], [2, 20], [3, 30], [100, -100], [4, 40]], dtype=np.float32)
    np.testing.assert_array_equal(aggregate("median", x).vector, [3, 20])
    np.testing.assert_array_equal(aggregate("median", x[:4]).vector, [2.5, 15])
    res = aggregate("trimmed_mean", x, f=1)                      # drops min and max per coordinate
    np.testing.assert_allclose(res.vector, [3.0, 20.0])
    assert res.info["f"] == 1


def test_krum_known_answer() -> None:
    x = np.array([[0.0], [0.1], [0.2], [0.3], [10.0]], dtype=np.float32)
    res = aggregate("krum", x, f=1)                              # n-f-2 = 2 nearest neighbours
    # scores: 0.0 -> .01+.04, 0.1 -> .01+.01, 0.2 -> .01+.01, 0.3 -> .01+.04, 10 -> 9.7^2+9.8^2
    np.testing.assert_allclose(res.scores[:4], [0.05, 0.02, 0.02, 0.05], rtol=1e-5)
    assert res.accepted.tolist() == [False, True, False, False, False]   # tie -> lower index
    assert res.vector[0] == np.float32(0.1) and res.reasons[0] == "krum: not selected"


def test_f_too_large_is_reduced_and_reported() -> None:
    x = _updates(7, 10)
    res = aggregate("krum", x, f=5)
    assert res.info["f"] == 2 and "f reduced from 5 to 2" in res.info["note"]
    assert all("f reduced" in r for r in res.reasons if r)
    assert aggregate("bulyan", x, f=3).info["f"] == 1
    with pytest.raises(ValueError, match="too few updates"):
        aggregate("krum", x[:2])


def test_multikrum_averages_the_m_best() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0], [50.0], [60.0]], dtype=np.float32)
    res = aggregate("multikrum", x, np.array([1, 1, 1, 3, 1, 1.0]), f=1, m=4, weight_cap=None)
    assert res.accepted.tolist() == [True, True, True, True, False, False]
    assert res.vector[0] == np.float32((0 + 1 + 2 + 9) / 6)
    with pytest.raises(ValueError, match="m must be"):
        aggregate("multikrum", x, m=0)


def test_geomed_known_answer() -> None:
    # Corners of a square plus a far point on the diagonal: on the diagonal (t, t) the pulls of
    # (0,0), (2,2) and the far point balance those of (2,0), (0,2) at t = 1 + 1/sqrt(3),
    # whatever the far point's distance (the mean, by contrast, goes to 20.8).
    x = np.array([[0, 0], [2, 0], [0, 2], [2, 2], [100, 100]], dtype=np.float32)
    res = aggregate("geomed", x, tol=1e-12, max_iter=500)
    np.testing.assert_allclose(res.vector, [1 + 1 / np.sqrt(3)] * 2, rtol=1e-4)
    assert res.scores[4] == res.scores.max()
    collinear = np.array([[0.0], [1.0], [5.0]], dtype=np.float32)
    assert abs(aggregate("geomed", collinear, tol=1e-12, max_iter=500).vector[0] - 1.0) < 1e-3


def test_centered_clip_bounds_an_outlier() -> None:
    x = np.zeros((9, 4), dtype=np.float32)
    x[:8] = np.random.default_rng(0).normal(scale=0.1, size=(8, 4))
    x[8] = 1e6
    res = aggregate("centered_clip", x)
    assert np.abs(res.vector).max() < 1.0 and res.scores.argmax() == 8
    with pytest.raises(ValueError, match="tau"):
        aggregate("centered_clip", x, tau=-1.0)


def test_staleness_weight() -> None:
    assert staleness_weight(0) == 1.0
    assert staleness_weight(3, a=0.5) == 0.5
    np.testing.assert_array_equal(staleness_weight(np.array([0, 1, 3]), a=1.0), [1.0, 0.5, 0.25])
    assert staleness_weight(np.array([2, 5]), a=0.0).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        staleness_weight(-1)
    with pytest.raises(ValueError):
        staleness_weight(1, a=-0.5)


PERMUTATION_INVARIANT = ["fedavg", "median", "trimmed_mean", "krum", "geomed"]


@settings(max_examples=25, deadline=None)
@given(data=st.data(), rule=st.sampled_from(PERMUTATION_INVARIANT))
def test_permutation_invariance(data: st.DataObject, rule: str) -> None:
    n = data.draw(st.integers(5, 12))
    d = data.draw(st.integers(1, 8))
    x = data.draw(arrays(np.float32, (n, d), elements=st.floats(-100, 100, width=32)))
    x += np.arange(n, dtype=np.float32)[:, None] * 1e-3              # no exact duplicates (Krum ties)
    perm = np.asarray(data.draw(st.permutations(range(n))))
    a, b = aggregate(rule, x), aggregate(rule, x[perm])
    if rule == "krum":                  # same update selected, when the best score is unique
        best, second = np.sort(a.scores)[:2]
        assume(second - best > 1e-6 * max(1.0, best))
        np.testing.assert_array_equal(a.vector, b.vector)
        assert np.array_equal(a.accepted[perm], b.accepted)
    elif rule == "geomed":
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-4, atol=1e-3)
    elif rule == "fedavg":
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-6, atol=1e-5)
    else:                                                             # sorted order: exact
        np.testing.assert_array_equal(a.vector, b.vector)


@pytest.mark.parametrize("rule", ["krum", "multikrum", "geomed", "bulyan", "centered_clip", "clustering"])
def test_bit_identical_across_blas_thread_counts(rule: str) -> None:
    from threadpoolctl import threadpool_limits
    x = _updates(40, 20_000, seed=5)
    x[:8] *= 3.0
    with threadpool_limits(limits=1, user_api="blas"):
        one = aggregate(rule, x, seed=1)
    with threadpool_limits(limits=2, user_api="blas"):
        two = aggregate(rule, x, seed=1)
    assert one.vector.tobytes() == two.vector.tobytes() and np.array_equal(one.accepted, two.accepted)
