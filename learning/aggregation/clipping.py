"""Centered clipping (Karimireddy, He and Jaggi, ICML 2021).

``v <- v + sum_i w_i (x_i - v) min(1, tau / |x_i - v|) / sum_i w_i``, repeated ``iters`` times.
A far update moves the centre by at most ``tau``, so a minority cannot drag it far. The node keeps
no state between rounds here, so the start is the medoid (the update with the smallest summed
distance to the others), a robust point the majority surrounds. Starting from an update and only
moving towards updates keeps ``v`` a convex combination of the updates, so as in
:mod:`.geomed` all iterations run on the Gram matrix and only the final combination touches d.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import exact
from ._core import AggregationResult, Inputs, result, weighted_sum


def check_params(p: Mapping[str, Any]) -> None:
    """Raise ValueError for a parameter value :func:`centered_clip` cannot take."""
    if p["iters"] < 1:
        raise ValueError(f"centered_clip: iters must be >= 1, got {p['iters']}")
    if p["tau"] is not None and not (np.isfinite(p["tau"]) and p["tau"] > 0):
        raise ValueError(f"centered_clip: tau must be a positive finite number, got {p['tau']}")


def centered_clip(inp: Inputs, *, tau: float | None = None, iters: int = 3) -> AggregationResult:
    """Centered clipping with radius ``tau``; ``None`` = the median distance to the current centre.

    The adaptive radius keeps the rule scale-free: at least half of the updates are never
    clipped, and the rest move the centre no more than a typical honest update does.
    """
    g = inp.gram
    share = exact.normalized(inp.weights)
    coef = np.zeros(inp.n)
    coef[int(np.argmin(exact.row_sums(np.sqrt(inp.sq_dists))))] = 1.0
    clipped = 0
    for _ in range(iters):
        dist = exact.dists_to_combination(g, coef)
        radius = exact.median(dist) if tau is None else float(tau)
        factor = np.minimum(1.0, radius / np.maximum(dist, 1e-300)) if radius > 0 else (dist == 0).astype(float)
        step = share * factor
        coef = coef * (1.0 - exact.total(step)) + step
        clipped = int(np.count_nonzero(factor < 1.0))
    coef = exact.normalized(coef)
    vector = weighted_sum(inp.updates, coef)
    scores = exact.dists_to_combination(g, coef)
    return result(vector, np.ones(inp.n, dtype=bool), scores, [""] * inp.n, clipped_last_iter=clipped)
