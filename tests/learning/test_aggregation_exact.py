"""The hardware-independent arithmetic under every rule: exact fixed-point Gram, fixed-order sums."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.aggregation import exact, staleness_weight


@pytest.mark.parametrize("d", [1, 2, 3, 1000, 5000, 100_000, 1_000_000, 50_000_000])
def test_grid_bits_keep_every_partial_sum_below_two_to_the_53(d: int) -> None:
    bits = exact.grid_bits(d)
    assert d * 4 ** bits <= 2 ** 53 < d * 4 ** (bits + 1) * 4       # as many bits as fit, no more
    assert bits >= 16 or d > 1_000_000


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 8), d=st.integers(1, 3000),
       scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e20, 3e38]))
def test_gram_is_the_exact_gram_of_the_quantized_rows(seed: int, n: int, d: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    # normal values clipped to 4 sigma, so even the largest scale stays a finite float32
    x = (np.clip(rng.standard_normal((n, d)), -4, 4) * rng.uniform(0.1, 1.0, (n, 1)) * (scale / 4)).astype(np.float32)
    x[rng.random((n, d)) < 0.2] = 0.0
    bits, exps = exact.grid_bits(d), exact.row_exponents(x)
    q = exact.quantize(x, exps, bits)
    assert np.array_equal(q, np.rint(q)) and np.abs(q).max() <= 2 ** bits
    ints = [[int(v) for v in row] for row in q.tolist()]
    g = exact.gram(x)
    for i in range(n):
        for j in range(n):
            truth = sum(a * b for a, b in zip(ints[i], ints[j]))         # Python ints: exact
            assert g[i, j] == math.ldexp(float(truth), int(exps[i] + exps[j]) - 2 * bits)
    # the quantized rows are close to the real ones: ~2^-bits of each row's largest value
    err = np.abs(q * np.ldexp(1.0, (exps - bits))[:, None] - x).max(axis=1)
    assert (err <= np.ldexp(1.0, exps - bits - 1)).all()



@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 8), d=st.integers(1, 3000),
       scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e20]))
def test_dots_with_a_vector_are_the_exact_gram_entries_of_it_as_one_more_row(seed: int, n: int, d: int,
                                                                             scale: float) -> None:
    rng = np.random.default_rng(seed)
    x = (np.clip(rng.standard_normal((n + 1, d)), -4, 4) * rng.uniform(0.1, 1.0, (n + 1, 1)) * scale).astype(np.float32)
    x[rng.random((n + 1, d)) < 0.2] = 0.0
    dots, own = exact.dots_with(np.ascontiguousarray(x[:n]), x[n])
    g = exact.gram(x)                         # the vector on its own grid, as one more row
    assert np.array_equal(dots, g[:n, n]) and own == g[n, n]

def test_one_huge_update_does_not_coarsen_the_others() -> None:
    x = np.random.default_rng(1).normal(size=(5, 400)).astype(np.float32)
    alone = exact.gram(x)
    with_giant = np.vstack([x, np.full((1, 400), 3e38, np.float32)])
    assert np.array_equal(exact.gram(with_giant)[:5, :5], alone)


def test_non_finite_rows_are_named() -> None:
    x = np.zeros((4, 3), np.float32)
    x[2, 1] = np.nan
    x[3, 0] = -np.inf
    with pytest.raises(ValueError, match=r"rows \[2, 3\]"):
        exact.gram(x)


def test_fixed_order_helpers() -> None:
    a = np.array([[1e16, 1.0, -1e16], [0.1, 0.2, 0.3]])
    assert exact.row_sums(a).tolist() == [(1e16 + 1.0) - 1e16, (0.1 + 0.2) + 0.3]   # left to right
    assert exact.total(np.array([1e16, 1.0, -1e16])) == 1.0                          # exactly rounded
    assert exact.matvec(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0.5, 0.25])).tolist() == [1.0, 2.5]
    assert exact.median(np.array([3.0, 1.0, 2.0])) == 2.0
    assert exact.median(np.array([1.7e308, 1.0e308])) == 1.35e308                    # no overflow
    assert math.copysign(1.0, exact.median(np.array([-0.0, 0.0, -0.0]))) == 1.0      # +0, whatever the sort
    assert math.copysign(1.0, float(exact.clip_negative(np.array([-0.0]))[0])) == 1.0


@pytest.mark.parametrize("s,a", [(1, 0.5), (2, 0.5), (3, 0.7), (4, 1.3), (7, 0.25), (1e6, 2.5), (3, 1e-9)])
def test_staleness_weight_is_the_correctly_rounded_power(s: float, a: float) -> None:
    with localcontext() as ctx:
        ctx.prec = 60
        truth = float((Decimal(1) + Decimal(s)) ** -Decimal(a))
    assert staleness_weight(s, a) == truth
