"""Arithmetic that gives the same bits on every IEEE-754 machine, whatever its BLAS or SIMD.

Delegates re-run a block's aggregation and compare the result bit for bit, on whatever CPUs they
have. A float64 BLAS product is not reproducible across machines: kernels (OpenBLAS picks one per
CPU generation), thread counts and FMA use sum in different orders, and float addition is not
associative. numpy's own reductions (``sum``, ``einsum``, ``@``) may also change their order with
the SIMD width. So every number a rule decides with is computed here in one of two ways:

* **Exactly.** :func:`gram` works on a fixed-point copy of the updates: each row is scaled by a
  power of two chosen from its largest absolute value and rounded to integers of at most ``B``
  bits, where ``d * 2^(2B) <= 2^53`` (:func:`grid_bits`). Every product of two such integers and
  every partial sum of a dot product is then an integer below 2^53, which float64 represents
  exactly, so BLAS returns the exact integer dot products in any order, with or without FMA.
  Scaling back by powers of two is exact too. The Gram matrix is thus the *exact* Gram matrix of
  the quantized updates (each value rounded to ``2^-B`` of its row's largest magnitude: ~18 bits
  at d = 100,000), identical everywhere. Per-row grids keep one huge update from coarsening the
  others.
* **In a fixed order with correctly rounded steps.** Everything after the Gram matrix is n x n
  work done with elementwise ``+ - * / sqrt`` (IEEE correctly rounded, so SIMD width cannot
  matter), comparisons, sorting, ``math.fsum`` (the correctly rounded exact sum, independent of
  order) and ``np.add.accumulate`` (a prefix sum, sequential by definition). No BLAS, no numpy
  reduction over floats, no transcendental function.

Zero has two encodings; wherever a zero could be chosen by a tie (``maximum``, sorting) it is
made +0 (:func:`clip_negative`, ``+ 0.0``) so a sign bit cannot differ.
"""

from __future__ import annotations

import math

import numpy as np

_BLOCK_BYTES = 32 << 20       # float64 working tile of the Gram product
_EXACT = 53                   # float64 represents every integer of magnitude <= 2^53


def grid_bits(d: int) -> int:
    """Bits per quantized value such that a d-term integer dot product stays exact in float64.

    With ``|q| <= 2^B`` every partial sum is at most ``d * 2^(2B) <= 2^(ceil(log2 d) + 2B) <= 2^53``.
    """
    return (_EXACT - (d - 1).bit_length()) // 2


def row_exponents(x: np.ndarray) -> np.ndarray:
    """Per row, the integer e with ``max|x_i| < 2^e`` (0 for an all-zero row); ValueError on NaN/Inf.

    ``max`` and ``min`` are exact (no rounding), so e is the same everywhere.
    """
    peak = np.maximum(np.max(x, axis=1), -np.min(x, axis=1))
    if not np.isfinite(peak).all():           # max/min propagate NaN; Inf is its own peak
        bad = np.flatnonzero(~np.isfinite(peak))
        raise ValueError(f"updates contain NaN or Inf in rows {bad[:10].tolist()}")
    return np.array([math.frexp(float(v))[1] for v in peak.tolist()], dtype=np.int64)


def _powers_of_two(exponents: np.ndarray) -> np.ndarray:
    return np.array([math.ldexp(1.0, int(e)) for e in exponents.tolist()], dtype=np.float64)


def quantize(x: np.ndarray, exponents: np.ndarray, bits: int) -> np.ndarray:
    """Integer-valued float64 copy of ``x``: row i times ``2^(bits - e_i)``, rounded to nearest.

    The scaling is exact (a power of two, float32 values fit float64) and ``rint`` is exact
    rounding, so the integers are the same everywhere; ``|q| <= 2^bits``.
    """
    q = np.multiply(x, _powers_of_two(bits - exponents)[:, None], dtype=np.float64)
    return np.rint(q, out=q)


def gram(x: np.ndarray) -> np.ndarray:
    """Exact Gram matrix of the per-row quantized updates (see the module docstring)."""
    n, d = x.shape
    bits = grid_bits(d)
    exponents = row_exponents(x)
    width = max(256, min(d, _BLOCK_BYTES // (8 * n)))
    g = np.zeros((n, n), dtype=np.float64)
    for start in range(0, d, width):
        q = quantize(x[:, start:start + width], exponents, bits)
        g += q @ q.T                          # integers below 2^53 throughout: exact in any order
    scale = _powers_of_two(exponents - bits)
    g *= scale[:, None]                       # powers of two: exact
    g *= scale[None, :]
    return g



def dots_with(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact dot product of every quantized row of ``x`` with the quantized vector ``v``, and
    ``v``'s own squared norm: ``v`` gets a grid of its own as every row does, so each product is
    an integer below 2^53 (as in :func:`gram`) and the result is the same on every machine."""
    n, d = x.shape
    bits = grid_bits(d)
    exponents, own = row_exponents(x), row_exponents(v[None, :])
    width = max(256, min(d, _BLOCK_BYTES // (8 * (n + 1))))
    out, vv = np.zeros(n, dtype=np.float64), 0.0
    for start in range(0, d, width):
        q = quantize(x[:, start:start + width], exponents, bits)
        qv = quantize(v[None, start:start + width], own, bits)[0]
        out += q @ qv                         # integers below 2^53 throughout: exact in any order
        vv += float(qv @ qv)
    scale = _powers_of_two(exponents - bits) * _powers_of_two(own - bits)[0]
    return out * scale, vv * float(_powers_of_two(2 * (own - bits))[0])

def group_norms(x: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """(n, G) Euclidean norm of each row's entries in each group (``groups[j]`` is entry j's group).

    The squares are those of the per-row quantized values :func:`gram` uses, so every group's sum
    of squares is a sum of integers below 2^53 (at most ``d * 2^(2B)``): exact in any order, and
    ``bincount``'s is as good as any. Scaling back by a power of two is exact, ``sqrt`` correctly
    rounded: the same bits everywhere.
    """
    n, d = x.shape
    bits = grid_bits(d)
    exponents = row_exponents(x)
    out = np.empty((n, num_groups), dtype=np.float64)
    for i in range(n):
        q = quantize(x[i:i + 1], exponents[i:i + 1], bits)[0]
        out[i] = np.bincount(groups, weights=np.multiply(q, q, out=q), minlength=num_groups)
    out *= _powers_of_two(2 * (exponents - bits))[:, None]
    return np.sqrt(out, out=out)


def clip_negative(v: np.ndarray) -> np.ndarray:
    """``max(v, 0)`` elementwise with a +0 result for every non-positive value."""
    return np.where(v > 0.0, v, 0.0)


def sq_dists_from_gram(g: np.ndarray) -> np.ndarray:
    """Pairwise squared distances ``|a|^2 + |b|^2 - 2ab``, round-off negatives clipped to +0."""
    sq = np.diagonal(g)
    dist = clip_negative(sq[:, None] + sq[None, :] - 2.0 * g)
    np.fill_diagonal(dist, 0.0)
    return dist


def row_sums(a: np.ndarray) -> np.ndarray:
    """Sum of each row of a 2-D array, adding its entries left to right."""
    if a.shape[1] == 0:
        return np.zeros(a.shape[0])
    return np.add.accumulate(a, axis=1)[:, -1].copy()


def total(v: np.ndarray) -> float:
    """Correctly rounded sum of a 1-D array (``math.fsum``: independent of order)."""
    return math.fsum(np.asarray(v, dtype=np.float64).ravel().tolist())


def matvec(g: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``g @ c`` with correctly rounded products summed left to right."""
    return row_sums(g * c[None, :])


def median(values: np.ndarray) -> float:
    """Median of non-negative values (distances, weights); see :func:`column_medians`."""
    return float(column_medians(np.asarray(values, dtype=np.float64).reshape(-1, 1))[0])


def column_medians(a: np.ndarray) -> np.ndarray:
    """Median of each column of non-negative values; an even count takes the midpoint of the two
    middle ones, computed as ``lo + (hi - lo) / 2`` so that it cannot overflow."""
    s = np.sort(np.asarray(a, dtype=np.float64), axis=0) + 0.0
    if s.shape[0] == 0:
        raise ValueError("median of no values")
    lo, hi = s[(s.shape[0] - 1) // 2], s[s.shape[0] // 2]
    return lo + (hi - lo) * 0.5


def dists_to_combination(g: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Distances from every row to the point ``coef @ rows``, from the Gram matrix alone."""
    gc = matvec(g, coef)
    return np.sqrt(clip_negative(np.diagonal(g) - 2.0 * gc + total(coef * gc)))


def normalized(coef: np.ndarray) -> np.ndarray:
    """Coefficients divided by their correctly rounded sum."""
    s = total(coef)
    if not s > 0.0:
        raise ValueError("coefficients sum to zero")
    return coef / s


def dists_to(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row of ``x`` to float32 ``center`` (suspicion scores of the rules
    that do not form a Gram matrix).

    Each difference is a correctly rounded float32 subtraction (float64 where float32 overflows),
    quantized on its own grid like a Gram row (scaling by a power of two, then ``rint``: both
    exact), so its squared norm is a sum of integer squares below 2^53, exact in float64 in any
    order: the same everywhere, to ~2^-B relative accuracy. Never used to compute an aggregate.
    """
    n, d = x.shape
    bits = grid_bits(d)
    c32 = np.asarray(center, dtype=np.float32)
    diff = np.empty(d, dtype=np.float32)
    wide = np.empty(d, dtype=np.float64)
    out = np.empty(n)
    for i in range(n):
        np.subtract(x[i], c32, out=diff)
        peak = max(float(diff.max()), -float(diff.min()))
        if math.isinf(peak):                 # |x - c| above the float32 range: subtract in float64
            np.subtract(x[i], c32, out=wide, dtype=np.float64)
            e = math.frexp(max(float(wide.max()), -float(wide.min())))[1]
            wide *= math.ldexp(1.0, bits - e)
        else:
            e = math.frexp(peak)[1]
            np.multiply(diff, math.ldexp(1.0, bits - e), out=wide, dtype=np.float64)   # power of two: exact
        np.rint(wide, out=wide)
        out[i] = math.ldexp(math.sqrt(float(wide @ wide)), e - bits)
    return out
