"""Coordinate-wise rules: median, trimmed mean, and Bulyan's "closest to the median" average.

Each coordinate is aggregated on its own, so no whole update is rejected: every update is
accepted (it may supply some coordinates and not others) and its score is its distance to the
aggregate. Columns are processed in blocks so memory stays at one block of copies, never (n, d).

Order-sensitive sums run over *sorted* values: the sorted order of a column is unique, whatever
sorting algorithm or SIMD width the machine uses, once -0 is made +0 (the only two distinct
values that compare equal; NaN is refused), so the float64 sum is reproducible everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._core import AggregationResult, Inputs, resolve_f, result
from .exact import dists_to

_BLOCK_BYTES = 1 << 20       # sorted working block: stays in cache


def _by_column_block(x: np.ndarray, rows: np.ndarray | None,
                     kernel: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``kernel`` to column blocks of ``x[rows]``, each given as (c, r) float32 with every
    row (one coordinate) sorted ascending; concatenate the results as float32."""
    idx = None if rows is None else np.asarray(rows)
    r = x.shape[0] if idx is None else len(idx)
    d = x.shape[1]
    width = max(64, _BLOCK_BYTES // (4 * r))
    out = np.empty(d, dtype=np.float32)
    for start in range(0, d, width):
        cols = slice(start, min(d, start + width))
        block = np.ascontiguousarray((x[:, cols] if idx is None else x[idx, cols]).T)
        block += np.float32(0.0)              # -0 -> +0: ties in the sort cannot differ in bits
        block.sort(axis=1)
        out[cols] = kernel(block)
    return out


def _ordered_sum(values: np.ndarray) -> np.ndarray:
    """Sum of (c, m) values over m, adding the m columns one after another in float64."""
    cols = np.ascontiguousarray(values.T)
    total = cols[0].astype(np.float64)
    for row in cols[1:]:
        total += row
    return total


def _median_kernel(srt: np.ndarray) -> np.ndarray:
    """Exact medians; an even count takes the float64 midpoint of the two middle values."""
    r = srt.shape[1]
    lo, hi = (r - 1) // 2, r // 2
    return srt[:, lo] if lo == hi else (srt[:, lo].astype(np.float64) + srt[:, hi]) * 0.5


def _trimmed_kernel(trim: int) -> Callable[[np.ndarray], np.ndarray]:
    def kernel(srt: np.ndarray) -> np.ndarray:
        r = srt.shape[1]
        return _ordered_sum(srt[:, trim:r - trim]) / (r - 2 * trim)
    return kernel


def _closest_kernel(beta: int) -> Callable[[np.ndarray], np.ndarray]:
    """Mean of the ``beta`` values closest to the median (El Mhamdi et al., Bulyan).

    The ``beta`` nearest neighbours of the median form a contiguous run of the sorted values:
    grown from the middle one value at a time, taking the nearer of the next lower and next
    higher value (the lower on ties). O(beta) vectorised steps per block.
    """
    def kernel(srt: np.ndarray) -> np.ndarray:
        c, r = srt.shape
        padded = np.empty((c, r + 2), dtype=np.float32)   # -inf/+inf sentinels end every row,
        padded[:, 0], padded[:, -1] = -np.inf, np.inf      # so no step needs a bounds check
        padded[:, 1:-1] = srt
        flat = padded.reshape(-1)               # 1-D takes are much cheaper than 2-D indexing
        med = _median_kernel(srt).astype(np.float64)
        lo = np.arange(c) * (r + 2) + 1 + (r - 1) // 2      # next candidate below (flat index)
        hi = lo + 1                                         # next candidate above
        for _ in range(beta):
            take_low = med - flat.take(lo) <= flat.take(hi) - med
            lo -= take_low
            hi += ~take_low
        return _ordered_sum(flat.take((lo + 1)[:, None] + np.arange(beta)[None, :])) / beta
    return kernel


def coordinate_median(x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Coordinate-wise median of ``x[rows]`` as float32."""
    return _by_column_block(x, rows, _median_kernel)


def closest_to_median_mean(x: np.ndarray, rows: np.ndarray, beta: int) -> np.ndarray:
    """Coordinate-wise mean of the ``beta`` values of ``x[rows]`` closest to their median."""
    return _by_column_block(x, rows, _closest_kernel(beta))


def median(inp: Inputs) -> AggregationResult:
    """Coordinate-wise median (Yin et al. 2018); breakdown point 1/2, weights not used."""
    vector = coordinate_median(inp.updates)
    return result(vector, np.ones(inp.n, dtype=bool), dists_to(inp.updates, vector), [""] * inp.n)


def check_trimmed_mean(p: Mapping[str, Any]) -> None:
    """Raise ValueError for a parameter value :func:`trimmed_mean` cannot take."""
    if not 0.0 <= p["beta"] < 0.5:
        raise ValueError(f"trimmed_mean: beta must be in [0, 0.5), got {p['beta']}")


def trimmed_mean(inp: Inputs, *, beta: float = 0.1) -> AggregationResult:
    """Coordinate-wise trimmed mean: drop the ``k`` largest and ``k`` smallest values per coordinate.

    ``k = f`` when ``f`` is given, else ``floor(beta * n)``; it must leave at least one value
    (``n >= 2k + 1``), otherwise ``k`` is reduced and ``info['note']`` says so. Weights not used.
    """
    n = inp.n
    requested = inp.f if inp.f is not None else int(np.floor(beta * n))
    trim, note = resolve_f(requested, (n - 1) // 2, "trimmed_mean", "needs n >= 2f + 1")
    vector = _by_column_block(inp.updates, None, _trimmed_kernel(trim))
    return result(vector, np.ones(n, dtype=bool), dists_to(inp.updates, vector), [""] * n,
                  f=trim, note=note)
