"""How much one update may count: the cap on claimed weights, and exact rescaling.

Weights are sample counts (times staleness discounts) that every sender reports about itself.
Nothing can verify a count, so an uncapped weight lets one sender who claims 2^64 - 1 samples
set the aggregate of every averaging rule to its own vector. :func:`cap_weights` bounds each
positive weight by ``cap`` times the median positive weight: a sender gains at most a factor
``cap`` over a typical honest one, however much it claims, and as long as fewer than half of the
senders lie the median (and so the bound) is set by honest claims. The default, 1.0, lets no
sender count more than the median sender: measured on Fashion-MNIST it leaves a 10^9 claim no
gain beyond seed noise and costs honest federations at most 0.2 points, also when a few nodes
hold most samples (``bench/weight_lie.py``; ``docs/decisions.md``).

:func:`unit_scale` multiplies weights by a power of two so the largest lies in (0.5, 1]: ratios
stay exact, and no sum of weights or of weighted values can overflow float64 whatever the
claims. Both steps are exact or correctly rounded elementwise operations, the median is a sort,
so the result is the same on every machine.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .exact import median

DEFAULT_WEIGHT_CAP = 1.0


def check_cap(cap: float | None) -> float | None:
    """``cap`` as a float, or ValueError: None (no cap) or a finite number >= 1."""
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(cap) and cap >= 1.0):
        raise ValueError(f"weight_cap must be None or a finite number >= 1, got {cap!r}")
    return float(cap)


def cap_weights(weights: np.ndarray, live: np.ndarray, cap: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Clip every live weight to at most ``cap`` x the median live weight (``None``: no clipping).

    Returns the clipped weights and what happened, for ``AggregationResult.info``: the cap, the
    limit it gave (in the caller's units) and the indices of the clipped weights.
    """
    if cap is None:
        return weights, {"weight_cap": None, "weight_limit": None, "weights_clipped": []}
    limit = cap * median(weights[live])
    clipped = live & (weights > limit)
    return (np.where(clipped, limit, weights),
            {"weight_cap": cap, "weight_limit": limit, "weights_clipped": np.flatnonzero(clipped).tolist()})


def unit_scale(values: np.ndarray) -> np.ndarray:
    """``values`` times the power of two that brings the largest into (0.5, 1] (exact scaling;
    equal weights become exactly 1, which the weighted sums add without a multiply)."""
    top = float(values.max())
    if top <= 0.0:
        return values
    mantissa, exponent = math.frexp(top)
    return np.ldexp(values, -(exponent - 1 if mantissa == 0.5 else exponent))
