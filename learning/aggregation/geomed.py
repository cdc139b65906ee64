"""Geometric median by the smoothed Weiszfeld algorithm (Pillutla et al., RFA).

The iterate is always a convex combination ``v = sum_i c_i x_i`` of the updates, so every
distance ``|x_i - v|^2 = G_ii - 2 (G c)_i + c^T G c`` follows from the Gram matrix G: iterations
cost O(n^2), not O(n d), and only the final combination touches the d-dimensional data. All of it
runs on the exact Gram matrix in fixed order (:mod:`.exact`), so the coefficients, and hence the
aggregate, are the same on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import exact
from ._core import AggregationResult, Inputs, result, weighted_sum


def check_params(p: Mapping[str, Any]) -> None:
    """Raise ValueError for a parameter value :func:`geomed` (and the Weiszfeld steps) cannot take."""
    if not (p["max_iter"] >= 1 and p["tol"] >= 0 and p["smoothing"] > 0):
        raise ValueError("geomed: need max_iter >= 1, tol >= 0, smoothing > 0")


def weiszfeld_coefficients(g: np.ndarray, weights: np.ndarray, *, max_iter: int = 100, tol: float = 1e-7,
                           smoothing: float = 1e-6) -> tuple[np.ndarray, int]:
    """Coefficients of the weighted geometric median of the rows behind Gram matrix ``g``.

    Weiszfeld step: ``c <- (w_i / max(nu, |x_i - v|)) normalised``; ``nu = smoothing`` times the
    median update norm keeps the step finite when ``v`` lands on an update and makes the rule
    scale-free. Stops after ``max_iter`` steps or when the weighted sum of distances improves by
    less than ``tol`` relative. Returns the coefficients and the
    number of steps taken (both identical on every machine).
    """
    check_params({"max_iter": max_iter, "tol": tol, "smoothing": smoothing})
    nu = smoothing * max(math.sqrt(max(exact.median(np.diagonal(g)), 0.0)), 1e-30)
    coef = exact.normalized(weights)
    objective = exact.total(weights * exact.dists_to_combination(g, coef))
    steps = 0
    for steps in range(1, max_iter + 1):
        coef = exact.normalized(weights / np.maximum(exact.dists_to_combination(g, coef), nu))
        new_objective = exact.total(weights * exact.dists_to_combination(g, coef))
        done = objective - new_objective <= tol * max(objective, 1e-300)
        objective = new_objective
        if done:
            break
    return coef, steps


def geomed(inp: Inputs, *, max_iter: int = 100, tol: float = 1e-7, smoothing: float = 1e-6) -> AggregationResult:
    """Weighted geometric median; every update contributes (with weight falling with distance)."""
    coef, steps = weiszfeld_coefficients(inp.gram, inp.weights, max_iter=max_iter, tol=tol, smoothing=smoothing)
    vector = weighted_sum(inp.updates, coef)
    scores = exact.dists_to_combination(inp.gram, coef)
    return result(vector, np.ones(inp.n, dtype=bool), scores, [""] * inp.n, iterations=steps)
