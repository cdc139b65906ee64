"""Shared machinery of the aggregation rules: the result type, input checks and exact-order kernels.

Delegates re-run a block's aggregation to verify it, so every rule must give bit-identical output
for the same inputs in the same order. The kernels here are built for that:

* Sums that produce the output vector are elementwise float64 operations over the rows in index
  order (:func:`weighted_sum`). IEEE elementwise add/multiply are correctly rounded, so the result
  does not depend on SIMD width, thread count or the BLAS library.
* Pairwise geometry (:func:`gram`) uses float64 BLAS products over fixed column blocks in a fixed
  order. It drives *decisions* (which updates are selected) and *coefficients* (Weiszfeld and
  clipping weights). Coefficients are rounded to float32 before they touch the output
  (:func:`canonical_coefficients`), so BLAS round-off (~1e-13 relative) could only change a result
  when a decision or a coefficient sits within that margin of a boundary; on one machine and BLAS
  build the result is always bit-identical.
* Randomness comes only from ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

_BLOCK_BYTES = 32 << 20       # float64 working tile of the Gram product
_COLUMN_TILE = 32768          # columns per cache-resident tile of the row loops
MAD_TO_SIGMA = 1.4826         # MAD of a normal sample times this estimates its standard deviation


@dataclass
class AggregationResult:
    """What a rule returns.

    ``vector`` (d,) float32 is the aggregate; ``accepted`` (n,) says which updates contributed;
    ``scores`` (n,) float64 rank suspicion (higher = more suspicious, for ROC/PR curves);
    ``reasons`` holds '' for accepted updates and a short cause otherwise; ``info`` records the
    effective parameters (e.g. ``f`` after reduction) so a block can state how it was aggregated.
    """

    vector: np.ndarray
    accepted: np.ndarray
    scores: np.ndarray
    reasons: list[str]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Inputs:
    """Validated inputs of one aggregation, with the Gram matrix computed at most once."""

    updates: np.ndarray                       # (n, d) float32, C-contiguous, finite
    weights: np.ndarray                       # (n,) float64, > 0
    f: int | None
    seed: int
    evaluate: Callable[[np.ndarray], float] | None

    @property
    def n(self) -> int:
        return int(self.updates.shape[0])

    @cached_property
    def gram(self) -> np.ndarray:
        return gram(self.updates)

    @cached_property
    def sq_dists(self) -> np.ndarray:
        return sq_dists_from_gram(self.gram)


def as_updates(updates: Any, *, check_finite: bool = True) -> np.ndarray:
    """Check and return ``updates`` as a C-contiguous (n, d) float32 array (no copy if already so).

    ``check_finite=False`` leaves the NaN/Inf check to the rule: a rule that forms the Gram
    matrix or a weighted sum of all rows sees non-finite input there exactly (:func:`gram`,
    :func:`weighted_mean`), which saves a pass over the data.
    """
    arr = np.asarray(updates)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"updates must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"updates must be 2-D (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"updates must hold at least one update of at least one value, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if check_finite:
        require_finite(arr)
    return arr


def require_finite(x: np.ndarray) -> None:
    """ValueError naming the rows of ``x`` that hold NaN or Inf.

    A float64 row sum of float32 values cannot overflow, and Inf-Inf gives NaN, so the sum is
    finite exactly when every value of the row is: one pass, no (n, d) boolean temporary.
    """
    bad = np.flatnonzero(~np.isfinite(np.add.reduce(x, axis=1, dtype=np.float64)))
    if bad.size:
        raise ValueError(f"updates contain NaN or Inf in rows {bad[:10].tolist()}")


def as_vector(values: Any, n: int, name: str) -> np.ndarray:
    """A finite, non-negative (n,) float64 vector, or a ValueError naming ``name``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    return arr


def resolve_f(requested: int | None, max_f: int, rule: str, requirement: str) -> tuple[int, str]:
    """Effective number of Byzantine inputs and a note when ``requested`` had to be reduced.

    A rule never fails because too few updates arrived for the requested ``f``: a block must still
    be produced, so ``f`` is reduced to the largest value the rule supports and the reduction is
    reported (in ``info`` and in every rejection reason). ``None`` means "the largest supported".
    """
    if max_f < 0:
        raise ValueError(f"{rule}: too few updates: {requirement} fails even for f = 0")
    if requested is None:
        return max_f, ""
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < 0:
        raise ValueError(f"{rule}: f must be a non-negative integer, got {requested!r}")
    if requested > max_f:
        return max_f, f"f reduced from {int(requested)} to {max_f} ({requirement})"
    return int(requested), ""


def gram(x: np.ndarray) -> np.ndarray:
    """Float64 Gram matrix ``x @ x.T`` accumulated over fixed column blocks, exactly symmetric."""
    n, d = x.shape
    width = max(256, min(d, _BLOCK_BYTES // (8 * n)))
    g = np.zeros((n, n), dtype=np.float64)
    for start in range(0, d, width):
        block = x[:, start:start + width].astype(np.float64)
        g += block @ block.T                  # numpy routes A @ A.T to BLAS syrk: symmetric result
    if not np.isfinite(np.diagonal(g)).all():  # squared norms: finite exactly when the rows are
        require_finite(x)
    return g


def sq_dists_from_gram(g: np.ndarray) -> np.ndarray:
    """Pairwise squared distances ``|a|^2 + |b|^2 - 2ab``, round-off negatives clipped to 0."""
    sq = np.diagonal(g)
    dist = sq[:, None] + sq[None, :] - 2.0 * g
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def gram_dists_to_combination(g: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Distances from every row to the point ``coef @ rows``, computed in coefficient space."""
    gc = g @ coef
    sq = np.diagonal(g) - 2.0 * gc + float(coef @ gc)
    return np.sqrt(np.maximum(sq, 0.0))


def weighted_sum(x: np.ndarray, coef: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``sum_i coef[i] * x[i]`` over ``rows`` (index order) in float64, elementwise and exact-order.

    Tiles of columns keep the float64 accumulator in cache; each row is scaled and added by
    separate correctly rounded ufunc calls, so no library can reorder or fuse the arithmetic.
    """
    order = np.arange(x.shape[0]) if rows is None else np.asarray(rows)
    d = x.shape[1]
    out = np.zeros(d, dtype=np.float64)
    tmp = np.empty(min(d, _COLUMN_TILE), dtype=np.float64)
    for start in range(0, d, _COLUMN_TILE):
        acc = out[start:start + _COLUMN_TILE]
        t = tmp[:acc.shape[0]]
        for i in order:
            if coef[i] == 1.0:                  # x * 1.0 == x exactly: skip the multiply
                np.add(acc, x[i, start:start + _COLUMN_TILE], out=acc)
            else:
                np.multiply(x[i, start:start + _COLUMN_TILE], coef[i], out=t, dtype=np.float64)
                np.add(acc, t, out=acc)
    return out


def weighted_mean(x: np.ndarray, weights: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean of ``rows`` as float32; the normaliser is an exactly rounded sum (fsum)."""
    sel = np.arange(x.shape[0]) if rows is None else np.asarray(rows)
    total = math.fsum(float(weights[i]) for i in sel)
    if total <= 0.0:
        raise ValueError("weights of the selected updates sum to zero")
    mean = weighted_sum(x, weights, sel) / total
    if not np.isfinite(mean).all():          # NaN/Inf input propagates to the sum exactly
        require_finite(x[sel])
        raise ValueError("weighted sum overflowed: weights too large")
    return mean.astype(np.float32)


def canonical_coefficients(coef: np.ndarray) -> np.ndarray:
    """Round coefficients to float32 and renormalise with an exactly rounded sum.

    Coefficients that come out of BLAS-dependent float64 arithmetic are made identical across
    machines (up to boundary cases of ~1e-6 probability) before they weight the output.
    """
    rounded = coef.astype(np.float32).astype(np.float64)
    return rounded / math.fsum(rounded.tolist())


def dists_to(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row of ``x`` to ``center``, for suspicion scores only.

    float32 differences (exact when the values are within a factor 2 of each other, else
    correctly rounded) and a float32 BLAS dot per row: ~1e-6 relative accuracy, ample for ranking
    suspicion, and cheaper than the aggregate itself. Never used to compute an aggregate.
    """
    c32 = np.asarray(center, dtype=np.float32)
    diff = np.empty(x.shape[1], dtype=np.float32)
    sq = np.empty(x.shape[0], dtype=np.float64)
    for i in range(x.shape[0]):
        np.subtract(x[i], c32, out=diff)
        sq[i] = float(np.dot(diff, diff))
    return np.sqrt(sq)


def robust_threshold(values: np.ndarray, multiplier: float, floor: float = 0.01) -> float:
    """``median + multiplier * sigma`` with sigma from the MAD, floored at ``floor * median``.

    The floor keeps a degenerate sample (many equal distances, MAD 0) from rejecting everything
    above the median.
    """
    med = float(np.median(values))
    sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(values - med))), floor * med)
    return med + multiplier * sigma


def result(vector: np.ndarray, accepted: np.ndarray, scores: np.ndarray, reasons: list[str],
           **info: Any) -> AggregationResult:
    """Assemble an :class:`AggregationResult` with the agreed dtypes."""
    return AggregationResult(np.ascontiguousarray(vector, dtype=np.float32), np.asarray(accepted, dtype=bool),
                             np.asarray(scores, dtype=np.float64), reasons, info)


def rejection_reasons(accepted: np.ndarray, reason: str, note: str = "") -> list[str]:
    """'' for accepted updates, ``reason`` (with the f-reduction note, if any) for the rest."""
    full = f"{reason}; {note}" if note else reason
    return ["" if ok else full for ok in accepted.tolist()]
