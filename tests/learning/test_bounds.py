"""learning.bounds: the largest norm an honest update has, the exactly rounded norm admission uses,
and a node's compressor kept within the bound without losing what it cuts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learning.bounds import TAIL_T, compress_within, l2_norm, rounding_allowance, sparse_norm, update_norm_bound
from learning.compression import ErrorFeedback, densify, sparsify
from learning.privacy import clip_and_noise


def test_bound_formula() -> None:
    assert update_norm_bound(1.0, 0.0, 100, "float32") == 2.0
    expected = 2.0 * (1.0 + 0.5 * (math.sqrt(400) + TAIL_T)) * (1 + 2.0 ** -11)
    assert update_norm_bound(1.0, 0.5, 400, "float16") == expected
    assert update_norm_bound(1.0, 0.0, 10_000, "int8") == 2.0 * (1 + 100 / 254)
    assert rounding_allowance("float32", 5) == 0.0
    with pytest.raises(ValueError):
        update_norm_bound(0.0, 1.0, 10, "float16")
    with pytest.raises(ValueError):
        rounding_allowance("bfloat16", 10)


@pytest.mark.parametrize("z", [0.0, 0.01, 1.0])
def test_honest_releases_stay_far_below_the_bound(z: float) -> None:
    """Clipped and noised deltas (the released vector) never come near it over many draws."""
    rng = np.random.default_rng(0)
    dim = 5000
    bound = update_norm_bound(1.0, z, dim, "float16")
    norms = [l2_norm(clip_and_noise(rng.normal(size=dim) * 10, 1.0, z, rng)[0]) for _ in range(200)]
    assert max(norms) < bound / 1.5


def test_l2_norm_is_exactly_rounded() -> None:
    values = np.array([3e38, 3e38, 1e-30, -2.5], dtype=np.float32)  # squares overflow float32, not float64
    wide = values.astype(np.float64)
    assert l2_norm(values) == math.sqrt(math.fsum(float(v) * float(v) for v in wide))
    # order does not matter (fsum is exact), unlike a plain float sum
    rng = np.random.default_rng(1)
    v = (rng.normal(size=10_000) * 10.0 ** rng.integers(-6, 6, 10_000)).astype(np.float32)
    assert l2_norm(v) == l2_norm(v[::-1]) == l2_norm(rng.permutation(v))


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "sign"])
def test_compress_within_cuts_to_the_bound_and_keeps_the_excess(dtype: str) -> None:
    rng = np.random.default_rng(2)
    dim = 2000
    ef = ErrorFeedback(dim, 0.1, dtype)
    bound = 1.0
    sent_total = np.zeros(dim, dtype=np.float64)
    given_total = np.zeros(dim, dtype=np.float64)
    for _ in range(20):
        delta = (rng.normal(size=dim) * 0.2).astype(np.float32)  # ~9 per round: far above the bound
        update = compress_within(ef, delta, bound)
        assert sparse_norm(update) <= bound
        sent_total += densify(update)
        given_total += delta
    # nothing is lost: what was sent plus the residual is what was given
    assert np.allclose(sent_total + ef.residual, given_total, atol=1e-3)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "sign"])
def test_compress_within_brings_an_update_a_hair_over_the_bound_under_it(dtype: str) -> None:
    """Without update noise an honest update's norm (clip plus residual) can land just over the
    bound; a cut smaller than the encoding's rounding step re-encodes to the same values, and the
    trainer failed ("could not bring the update's norm 2.00111 within 2.00098")."""
    for seed in range(20):
        values = np.random.default_rng(seed).normal(size=200).astype(np.float16).astype(np.float32)
        bound = l2_norm(values) / (1 + 1e-5)
        ef = ErrorFeedback(200, 1.0, dtype)
        assert sparse_norm(compress_within(ef, values, bound)) <= bound


def test_compress_within_leaves_small_updates_alone() -> None:
    rng = np.random.default_rng(3)
    delta = (rng.normal(size=500) * 0.001).astype(np.float32)
    a, b = ErrorFeedback(500, 0.1, "float16"), ErrorFeedback(500, 0.1, "float16")
    assert np.array_equal(densify(compress_within(a, delta, 10.0)), densify(b.compress(delta)))
    assert np.array_equal(a.residual, b.residual)


def test_signs_never_grow_the_norm() -> None:
    """Why ``sign`` has no rounding allowance: sqrt(k) * mean|v| <= ||v|| (Cauchy-Schwarz)."""
    rng = np.random.default_rng(4)
    for _ in range(50):
        v = (rng.standard_normal(300) * rng.exponential(1.0, 300)).astype(np.float32)
        update = sparsify(v, 30, "sign")
        assert sparse_norm(update) <= l2_norm(v[update.indices])
