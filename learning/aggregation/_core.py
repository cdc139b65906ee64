"""Shared machinery of the aggregation rules: the result type, the error type, input checks and the
kernels that touch the d-dimensional data.

Every field of a result must be bit-identical for the same inputs in the same order on every
machine (delegates re-run the aggregation to verify a block):

* Geometry (distances, Gram matrices) and every decision or coefficient derived from it come from
  :mod:`.exact`: exact fixed-point Gram products and fixed-order, correctly rounded n x n steps.
* Output vectors are elementwise float64 weighted sums over the rows in index order
  (:func:`weighted_sum`) of the real float32 values, with coefficients normalised to sum to one.
  IEEE elementwise multiply and add are correctly rounded, so the sum depends on nothing but the
  inputs; and a convex combination of float32 values cannot overflow float32.
* Randomness comes only from ``np.random.default_rng(seed)``.

``evaluate`` values supplied by the caller are used only through comparisons, so equal values
give equal results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from . import exact

_COLUMN_TILE = 32768          # columns per cache-resident tile of the row loops
MAD_TO_SIGMA = 1.4826         # MAD of a normal sample times this estimates its standard deviation


class AggregationError(ValueError):
    """The rule cannot produce a usable aggregate from these (finite, well-formed) inputs.

    Raised instead of ever returning a vector that is not finite in float32. The caller skips the
    round (records the reason) rather than moving the model.
    """


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
    weights: np.ndarray                       # (n,) float64 in [0, 1], largest in (0.5, 1]
    f: int | None
    seed: int
    evaluate: Callable[[np.ndarray], float] | None
    groups: np.ndarray | None = None          # (d,) int64 feature group of each entry (see as_groups)
    reference: np.ndarray | None = None       # (d,) float32 direction the model has recently moved (see as_reference)
    held: np.ndarray | None = None            # (n,) bool: senders the chain holds for pointing against it (see as_held)
    witness: WitnessRows | None = None        # senders' last accepted feature-group norms (see as_witness)

    @property
    def n(self) -> int:
        return int(self.updates.shape[0])

    @cached_property
    def group_norms(self) -> np.ndarray:
        """(n, G) exact norm of each update's entries in each feature group; needs ``groups``."""
        if self.groups is None:
            raise ValueError("no feature groups were given")
        return exact.group_norms(self.updates, self.groups, int(self.groups.max()) + 1)

    @cached_property
    def gram(self) -> np.ndarray:
        return exact.gram(self.updates)

    @cached_property
    def sq_dists(self) -> np.ndarray:
        return exact.sq_dists_from_gram(self.gram)


def as_updates(updates: Any, *, check_finite: bool = True) -> np.ndarray:
    """Check and return ``updates`` as a C-contiguous (n, d) float32 array (no copy if already so).

    ``check_finite=False`` leaves the NaN/Inf check to the rule: a rule that forms the Gram
    matrix or a weighted sum of all rows sees non-finite input there exactly
    (:func:`.exact.gram`, :func:`weighted_mean`), which saves a pass over the data.
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


def as_groups(groups: Any, d: int) -> np.ndarray:
    """A (d,) int64 vector of feature-group ids in ``[0, d)``, or a ValueError."""
    arr = np.asarray(groups)
    if arr.shape != (d,) or arr.dtype.kind not in "iu":
        raise ValueError(f"groups must be an integer vector of shape ({d},), got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= d:
        raise ValueError(f"group ids must lie in [0, {d})")
    return arr



def as_held(held: Any, n: int) -> np.ndarray:
    """A (n,) bool mask, or a ValueError."""
    arr = np.asarray(held)
    if arr.shape != (n,) or arr.dtype != np.bool_:
        raise ValueError(f"held must be a ({n},) bool mask, got shape {arr.shape} and dtype {arr.dtype}")
    return arr


class WitnessRows(NamedTuple):
    """The feature-group norms of senders' last accepted updates, and whose they are.

    ``norms`` (m, G): one row per sender the chain has a witness of; ``owner`` (n,): per update of
    the round, the row of its sender (-1 for none). A row stands in for its sender unless one of
    that sender's updates is accepted (which then speaks for it).
    """

    norms: np.ndarray
    owner: np.ndarray

    def standing(self, accepted: np.ndarray) -> np.ndarray:
        """The rows of the senders none of whose updates ``accepted`` (n,) bool accepts."""
        used = np.ones(self.norms.shape[0], dtype=bool)
        used[self.owner[accepted & (self.owner >= 0)]] = False
        return self.norms[used]

    def subset(self, rows: np.ndarray) -> WitnessRows:
        """The same rows for the round restricted to updates ``rows``."""
        return WitnessRows(self.norms, self.owner[rows])


def as_witness(witness: Any, groups: np.ndarray | None, n: int) -> WitnessRows:
    """``(norms, owner)`` checked: finite, non-negative (m, G) float64 norms for a model of ``G``
    feature groups, and an (n,) int64 owner in ``[-1, m)``; or a ValueError."""
    if groups is None:
        raise ValueError("a witness needs the model's feature groups")
    if not isinstance(witness, (tuple, list)) or len(witness) != 2:
        raise ValueError("witness must be a pair (norms, owner)")
    norms, owner = witness
    arr = np.asarray(norms, dtype=np.float64)
    width = int(groups.max()) + 1
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"witness norms must have shape (m, {width}), got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("witness norms must be finite and non-negative")
    own = np.asarray(owner)
    if own.shape != (n,) or own.dtype.kind not in "iu":
        raise ValueError(f"witness owner must be an integer vector of shape ({n},), got {own.dtype} {own.shape}")
    own = own.astype(np.int64)
    if n and (own.min() < -1 or own.max() >= arr.shape[0]):
        raise ValueError(f"witness owner must lie in [-1, {arr.shape[0]})")
    return WitnessRows(arr, own)


def as_reference(reference: Any, d: int) -> np.ndarray | None:
    """A finite (d,) float32 direction, None for an all-zero one (no direction), or a ValueError."""
    arr = np.ascontiguousarray(reference, dtype=np.float32)
    if arr.shape != (d,):
        raise ValueError(f"reference must be a vector of shape ({d},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("reference contains NaN or Inf")
    return arr if arr.any() else None

def as_vector(values: Any, n: int, name: str) -> np.ndarray:
    """A finite, non-negative (n,) float64 vector, or a ValueError naming ``name``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    return arr


def check_f(requested: int | None, rule: str) -> None:
    """ValueError unless ``requested`` (the assumed Byzantine count) is None or an integer >= 0."""
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, (int, np.integer))
                                  or requested < 0):
        raise ValueError(f"{rule}: f must be a non-negative integer, got {requested!r}")


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
    check_f(requested, rule)
    if requested > max_f:
        return max_f, f"f reduced from {int(requested)} to {max_f} ({requirement})"
    return int(requested), ""


FeatureScale = tuple[np.ndarray, np.ndarray]
"""``(factors, groups)``: row i's entries of feature group g are scaled by ``factors[i, g]``."""


def weighted_sum(x: np.ndarray, coef: np.ndarray, rows: np.ndarray | None = None,
                 features: FeatureScale | None = None) -> np.ndarray:
    """``sum_i coef[i] * x[i]`` over ``rows`` (index order) in float64, elementwise and exact-order.

    Tiles of columns keep the float64 accumulator in cache; each row is scaled and added by
    separate correctly rounded ufunc calls, so no library can reorder or fuse the arithmetic.
    ``features`` scales each row further, group by group (a second correctly rounded product).
    """
    order = np.arange(x.shape[0]) if rows is None else np.asarray(rows)
    d = x.shape[1]
    scaled = set() if features is None else {int(i) for i in order if (features[0][i] != 1.0).any()}
    out = np.zeros(d, dtype=np.float64)
    tmp = np.empty(min(d, _COLUMN_TILE), dtype=np.float64)
    for start in range(0, d, _COLUMN_TILE):
        acc = out[start:start + _COLUMN_TILE]
        t = tmp[:acc.shape[0]]
        for i in order:
            if int(i) in scaled:
                np.multiply(x[i, start:start + _COLUMN_TILE], coef[i], out=t, dtype=np.float64)
                np.multiply(t, features[0][i][features[1][start:start + _COLUMN_TILE]], out=t)  # type: ignore[index]
                np.add(acc, t, out=acc)
            elif coef[i] == 1.0:                # x * 1.0 == x exactly: skip the multiply
                np.add(acc, x[i, start:start + _COLUMN_TILE], out=acc)
            else:
                np.multiply(x[i, start:start + _COLUMN_TILE], coef[i], out=t, dtype=np.float64)
                np.add(acc, t, out=acc)
    return out


def weighted_mean(x: np.ndarray, weights: np.ndarray, rows: np.ndarray | None = None,
                  shrink: np.ndarray | None = None, features: FeatureScale | None = None) -> np.ndarray:
    """Weighted mean of ``rows`` as float32: the fixed-order sum of ``w_i x_i`` divided by the
    correctly rounded sum of the weights. Weights are at most 1 (:func:`.weighting.unit_scale`),
    so the sum cannot overflow and the mean stays within the rows' range.

    ``shrink`` (n,) in [0, 1] scales each row before it is summed (a norm clip: ``w_i s_i x_i``
    over the unchanged ``sum w_i``); each coefficient is one correctly rounded product.
    ``features`` (factors in [0, 1]) scales each row's feature groups as well (a per-feature clip)."""
    sel = np.arange(x.shape[0]) if rows is None else np.asarray(rows)
    total = exact.total(weights[sel])
    if not total > 0.0:                      # only when weights differ by more than 2^1074
        raise AggregationError("the weights of the selected updates are all zero")
    coef = weights if shrink is None else weights * shrink
    mean = weighted_sum(x, coef, sel, features) / total
    if not np.isfinite(mean).all():          # NaN/Inf input propagates to the sum exactly
        require_finite(x[sel])
    return mean.astype(np.float32)


def robust_threshold(values: np.ndarray, multiplier: float, floor: float = 0.01) -> float:
    """``median + multiplier * sigma`` with sigma from the MAD, floored at ``floor * median``.

    The floor keeps a degenerate sample (many equal distances, MAD 0) from rejecting everything
    above the median.
    """
    med = exact.median(values)
    sigma = max(MAD_TO_SIGMA * exact.median(np.abs(values - med)), floor * med)
    return med + multiplier * sigma


def result(vector: np.ndarray, accepted: np.ndarray, scores: np.ndarray, reasons: list[str],
           **info: Any) -> AggregationResult:
    """Assemble an :class:`AggregationResult` with the agreed dtypes; AggregationError if the
    vector is not finite in float32 (the inputs were checked, so that can only be overflow)."""
    with np.errstate(over="ignore"):         # an overflow is reported below, not warned about
        vector = np.ascontiguousarray(vector, dtype=np.float32)
    if not np.isfinite(vector).all():
        bad = np.flatnonzero(~np.isfinite(vector))
        raise AggregationError(f"aggregate is not finite in float32 at {bad.size} coordinate(s) "
                               f"(first {bad[:5].tolist()}): overflow; skip this round")
    return AggregationResult(vector, np.asarray(accepted, dtype=bool), np.asarray(scores, dtype=np.float64),
                             reasons, info)


def rejection_reasons(accepted: np.ndarray, reason: str, note: str = "") -> list[str]:
    """'' for accepted updates, ``reason`` (with the f-reduction note, if any) for the rest."""
    full = f"{reason}; {note}" if note else reason
    return ["" if ok else full for ok in accepted.tolist()]
