"""Staleness discount of asynchronous updates (FedAsync, Xie et al. 2019): ``(1 + s) ** -a``.

An update trained on a model ``s`` versions old is multiplied by this factor before aggregation.
The power is taken with Python's scalar ``math.pow`` per element rather than numpy's vectorised
``power`` (which may use different SIMD approximations on different CPUs), because the weight
feeds into an aggregate that other delegates must reproduce bit for bit.
"""

from __future__ import annotations

import math

import numpy as np


def _one(s: float, a: float) -> float:
    return math.pow(1.0 + s, -a)


def staleness_weight(staleness: np.ndarray | int, a: float = 0.5) -> np.ndarray | float:
    """Polynomial staleness weight ``(1 + s)^-a``; an int gives a float, an array a float64 array.

    ``s`` counts model versions (non-negative, finite); ``a >= 0`` sets how fast weight decays
    (``a = 0`` ignores staleness).
    """
    a = float(a)
    if not math.isfinite(a) or a < 0:
        raise ValueError(f"staleness exponent a must be finite and >= 0, got {a}")
    arr = np.asarray(staleness, dtype=np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("staleness must be finite and non-negative")
    if arr.ndim == 0:
        return _one(float(arr), a)
    return np.array([_one(s, a) for s in arr.ravel().tolist()], dtype=np.float64).reshape(arr.shape)
