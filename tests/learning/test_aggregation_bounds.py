"""Bounded influence and bounded values: what no single sender's claim or value can do."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from learning.aggregation import DEFAULT_WEIGHT_CAP, RULE_NAMES, AggregationError, aggregate

# Rules that average with the weights (the others only select or work per coordinate).
AVERAGING = ["fedavg", "trust", "multikrum", "geomed", "centered_clip", "clustering"]
FLT_MAX = float(np.finfo(np.float32).max)
LIES = [2.0 ** 64 - 1, 1e9]


def _round(seed: int = 0, n: int = 20, d: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Honest updates around a common mean, honest sample counts, and the liar's vector: as far
    from the honest mean as a typical honest update (so no rule can tell it apart)."""
    rng = np.random.default_rng(seed)
    honest = (rng.normal(size=d) + rng.normal(size=(n, d))).astype(np.float32)
    counts = rng.integers(500, 3000, n).astype(np.float64)
    direction = rng.normal(size=d)
    typical = float(np.median(np.linalg.norm(honest - honest.mean(axis=0), axis=1)))
    liar = (honest[1:].mean(axis=0) + typical * direction / np.linalg.norm(direction)).astype(np.float32)
    return honest, counts, liar


def _run(rule: str, x: np.ndarray, w: np.ndarray, **kw):
    trust = np.linspace(0.5, 1.0, x.shape[0]) if rule == "trust" else None
    return aggregate(rule, x, w, trust=trust, f=2, **kw)


@pytest.mark.parametrize("claim", LIES)
@pytest.mark.parametrize("rule", AVERAGING)
def test_a_liar_gets_at_most_its_capped_share(rule: str, claim: float) -> None:
    honest, counts, liar = _round()
    x = honest.copy()
    x[0] = liar
    lying = counts.copy()
    lying[0] = claim
    res = _run(rule, x, lying)
    limit = DEFAULT_WEIGHT_CAP * float(np.median(lying))
    assert 0 in res.info["weights_clipped"] and res.info["weight_limit"] == limit
    # A lie buys exactly what claiming the limit buys: every output bit is the same as for an
    # honest-sized claim at or above the limit (one that leaves the median where it is).
    capped = counts.copy()
    capped[0] = max(limit, counts[1:].max())
    same = _run(rule, x, capped)
    assert res.vector.tobytes() == same.vector.tobytes() and res.scores.tobytes() == same.scores.tobytes()
    assert np.array_equal(res.accepted, same.accepted) and res.reasons == same.reasons
    # And the aggregate moves from what the others alone give towards the liar by at most the
    # liar's capped share of the weight (the uncapped lie moved it all the way).
    trust = np.linspace(0.5, 1.0, 20) if rule == "trust" else np.ones(20)
    eff = np.where(res.accepted, np.minimum(lying, limit) * trust, 0.0)
    share = eff[0] / eff.sum()
    without = aggregate(rule, x[1:], counts[1:], trust=None if rule != "trust" else trust[1:], f=2).vector
    toward = liar.astype(np.float64) - without
    pull = float((res.vector - without) @ toward / (toward @ toward))
    # A robust centre weighs each update by weight / distance, so an update at a typical distance
    # can pull a little more than its weight share; the uncapped lie pulled with share ~1.
    slack = 1.25 if rule in ("geomed", "centered_clip") else 1.0
    assert pull <= slack * share + 1e-3, (rule, pull, share)


def test_the_cap_can_be_set_or_turned_off_and_is_reported() -> None:
    honest, counts, liar = _round(seed=1)
    x = honest.copy()
    x[0] = liar
    lying = counts.copy()
    lying[0] = 1e9
    free = aggregate("fedavg", x, lying, weight_cap=None)
    np.testing.assert_allclose(free.vector, liar, rtol=1e-4, atol=1e-4)      # the uncapped liar wins
    assert free.info["weight_cap"] is None and free.info["weights_clipped"] == []
    loose = aggregate("fedavg", x, lying, weight_cap=10.0)
    assert loose.info["weight_limit"] == 10.0 * float(np.median(lying))
    honest_only = aggregate("fedavg", x, counts, weight_cap=None)
    assert np.linalg.norm(loose.vector - honest_only.vector) < np.linalg.norm(free.vector - honest_only.vector)
    for bad in (0.5, float("inf"), float("nan"), -1.0, True, "2"):
        with pytest.raises(ValueError, match="weight_cap"):
            aggregate("fedavg", x, counts, weight_cap=bad)


def test_the_median_comes_from_the_updates_that_take_part() -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    w = np.array([0.0, 1.0, 1.0, 1.0, 100.0, 1e12])
    res = aggregate("fedavg", x, w, weight_cap=2.0)
    assert res.info["weight_limit"] == 2.0 and res.info["weights_clipped"] == [4, 5]
    assert res.info["excluded"] == 1 and not res.accepted[0]
    np.testing.assert_array_equal(res.vector, np.average(x[1:], axis=0, weights=[1, 1, 1, 2, 2]).astype(np.float32))


_VALUES = st.sampled_from([FLT_MAX, -FLT_MAX, FLT_MAX / 2, 1e38, -3e38, 1.0, -1.0, 0.0, -0.0, 1e-38, 3.0])
_WEIGHTS = st.sampled_from([1.0, 7.0, 2.0 ** 64 - 1, 1e308, 1.7e308, 5e-324, 1e-300])


@settings(max_examples=150, deadline=None)
@given(data=st.data(), rule=st.sampled_from(RULE_NAMES))
def test_float32_limit_values_and_extreme_weights_never_give_a_non_finite_vector(data: st.DataObject,
                                                                                 rule: str) -> None:
    n = data.draw(st.integers(7, 11))            # enough for every rule's f = 1 (bulyan: 4f + 3)
    d = data.draw(st.integers(1, 5))
    x = data.draw(arrays(np.float32, (n, d), elements=_VALUES))
    w = data.draw(arrays(np.float64, (n,), elements=_WEIGHTS))
    w[data.draw(st.integers(0, n - 1))] = data.draw(st.sampled_from([1.0, 1e308, 2.0 ** 64 - 1]))
    trust = data.draw(arrays(np.float64, (n,), elements=st.sampled_from([1.0, 1e-300, 1e308]))) \
        if rule == "trust" else None
    cap = data.draw(st.sampled_from([DEFAULT_WEIGHT_CAP, None]))
    try:
        res = aggregate(rule, x, w, trust=trust, f=1, weight_cap=cap)
    except AggregationError:
        return
    assert np.isfinite(res.vector).all()
    assert res.vector.dtype == np.float32
    assert not np.isnan(res.scores).any() and np.isfinite(res.scores[res.accepted]).all()


def test_float32_limit_values_never_make_a_clustering_score_nan() -> None:
    """Found by the property test above: the shared-offset test's cosines, computed through the
    Gram identity, cancelled catastrophically at these values and one infinite cosine made a score
    NaN."""
    x = np.array([[1e38], [-3e38], [-1], [-1], [-1], [-1], [-1]], dtype=np.float32)
    res = aggregate("clustering", x, np.ones(7), f=1)
    assert not np.isnan(res.scores).any() and np.isfinite(res.scores[res.accepted]).all()


def test_aggregation_error_is_a_value_error_with_a_reason() -> None:
    from learning.aggregation._core import result

    assert issubclass(AggregationError, ValueError)
    with pytest.raises(AggregationError, match="not finite in float32"):
        result(np.array([1e39, 0.0]), np.ones(2, dtype=bool), np.zeros(2), ["", ""])
    # Without a cap, weights 2^1000 apart underflow once scaled: the selected ones carry nothing.
    x = np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32)
    w = np.r_[1e300, np.full(9, 1e-320)]
    with pytest.raises(AggregationError, match="all zero"):
        aggregate("multikrum", x, w, m=3, weight_cap=None)
    assert np.isfinite(aggregate("multikrum", x, w, m=3).vector).all()      # the cap evens them out


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_non_finite_input_is_still_a_plain_value_error(rule: str) -> None:
    x = np.ones((6, 3), dtype=np.float32)
    x[2, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf") as caught:
        aggregate(rule, x, trust=np.ones(6) if rule == "trust" else None)
    assert not isinstance(caught.value, AggregationError)
