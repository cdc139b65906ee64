"""Averaging rules: FedAvg (paper eq. 1) and the trust-weighted average (paper eq. 2).

Neither rule rejects anything (updates with zero weight are excluded before any rule runs), so
their score is only a detection signal: the distance of each update to the average.
"""

from __future__ import annotations

import numpy as np

from ._core import AggregationResult, Inputs, result, weighted_mean
from .exact import dists_to


def fedavg(inp: Inputs) -> AggregationResult:
    """Sample-weighted average ``sum_i w_i x_i / sum_i w_i`` (weights = samples x staleness)."""
    vector = weighted_mean(inp.updates, inp.weights)
    accepted = np.ones(inp.n, dtype=bool)
    return result(vector, accepted, dists_to(inp.updates, vector), [""] * inp.n)


def trust_weighted(inp: Inputs) -> AggregationResult:
    """Trust-weighted average: :func:`aggregate` has already multiplied the weights by the trust.

    Kept as its own rule so the block names the rule that was applied.
    """
    return fedavg(inp)
