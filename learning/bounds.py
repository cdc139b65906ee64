"""How large an honest update can be, and keeping a node's own updates within that.

Every honest node clips its delta to L2 norm ``C`` and adds Gaussian noise N(0, (zC)^2) per
coordinate, so the norm of what it releases is at most ``C`` plus the norm of the noise. The noise
norm is a chi variable with ``d`` degrees of freedom times ``zC``; by Gaussian concentration
(the norm is 1-Lipschitz), ``P(||g|| >= sqrt(d) + t) <= exp(-t^2 / 2)``, so with
``t = TAIL_T`` an honest release exceeds ``C + zC (sqrt(d) + t)`` with probability below 1e-12.
Top-k with error feedback then sends the top coordinates of (release + residual), which can carry
more than one release's worth, and quantisation rounds the values: :data:`SLACK` (x2) and a
per-encoding rounding allowance cover both. A node clips what it sends to the bound and keeps the
excess in its residual (:func:`compress_within`), so an honest update is never refused and
nothing is lost, only delayed.

The bound and the norm are computed with IEEE operations whose results every CPU rounds alike:
``math.fsum`` of float64 squares of float32 values (each square is exact, the sum correctly
rounded) and ``math.sqrt``. Verifiers re-check admission of every listed update and must agree
with the proposer to the bit.
"""

from __future__ import annotations

import math

import numpy as np

from learning.compression import ErrorFeedback, SparseUpdate, densify, sparsify

TAIL_T = math.sqrt(2 * math.log(1e12))
"""Deviations above sqrt(d) of the noise norm allowed: exceeded with probability below 1e-12."""
SLACK = 2.0
"""Room for the error-feedback residual sent along with a release."""
_ROUNDING = {"float32": 0.0, "float16": 2.0 ** -11, "sign": 0.0}


def rounding_allowance(encoding: str, dim: int) -> float:
    """Relative growth of the norm that rounding the sent values to ``encoding`` can cause.

    float16 rounds each value to 11 significant bits; int8 rounds each to half a step of
    peak/127, at most ``sqrt(k) * peak / 254`` over k <= dim values, i.e. ``sqrt(dim) / 254`` of
    the norm. ``sign`` sends each value as its sign times the mean magnitude, whose norm
    ``sqrt(k) * mean|v|`` is at most ``||v||`` (Cauchy-Schwarz): it never grows.
    """
    if encoding == "int8":
        return math.sqrt(dim) / 254
    if encoding not in _ROUNDING:
        raise ValueError(f"unknown encoding {encoding!r}")
    return _ROUNDING[encoding]


def update_norm_bound(clip: float, noise_multiplier: float, dim: int, encoding: str, slack: float = SLACK) -> float:
    """The largest L2 norm an honest node's update may have (see the module docstring)."""
    if not (clip > 0 and noise_multiplier >= 0 and dim >= 1 and slack >= 1):
        raise ValueError("need clip > 0, noise_multiplier >= 0, dim >= 1 and slack >= 1")
    noise = noise_multiplier * clip * (math.sqrt(dim) + TAIL_T)
    return slack * (clip + noise) * (1.0 + rounding_allowance(encoding, dim))


def l2_norm(values: np.ndarray) -> float:
    """Exactly rounded L2 norm of float32 ``values``: the same float on every CPU."""
    wide = np.asarray(values, dtype=np.float32).astype(np.float64)
    return math.sqrt(math.fsum((wide * wide).tolist()))


def sparse_norm(update: SparseUpdate) -> float:
    """L2 norm of what an update stands for (its decoded values), computed as admission does."""
    return l2_norm(update.decoded_values())


def compress_within(ef: ErrorFeedback, delta: np.ndarray, bound: float) -> SparseUpdate:
    """``ef.compress(delta)``, scaled down if needed so its decoded norm is at most ``bound``;
    what is cut stays in the residual (with error feedback on), to be sent later.

    Scaling aims below the bound by the encoding's own rounding (a value re-encoded after a
    scale smaller than its rounding step rounds back to itself: float16 keeps 11 bits, so a
    0.01% cut of an update 0.001% over the bound changed nothing, and eight tries failed), and by
    twice as much more on each try."""
    update = ef.compress(delta)
    rounding = rounding_allowance(ef.dtype, ef.k)
    for attempt in range(8):
        norm = sparse_norm(update)
        if norm <= bound:
            return update
        sent = densify(update)
        margin = (1.0 + rounding) * (1.0 + 1e-4 * 2 ** attempt)
        update = sparsify(sent * np.float32(bound / norm / margin), ef.k, ef.dtype)
        if ef.enabled:
            ef.residual += sent - densify(update)
    raise ValueError(f"could not bring the update's norm {norm:.6g} within {bound:.6g}")
