"""Staleness discount of asynchronous updates (FedAsync, Xie et al. 2019): ``(1 + s) ** -a``.

An update trained on a model ``s`` versions old is multiplied by this factor before aggregation,
and the weight feeds an aggregate that other delegates must reproduce bit for bit. A libm
``pow`` is not correctly rounded everywhere (glibc, musl, Apple and Windows differ in the last
bit), nor is numpy's SIMD ``power``. So the power is computed in decimal arithmetic with 34
significant digits (libmpdec: integer arithmetic, the same on every platform) and then rounded
once to the nearest float64.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal

import numpy as np

_DECIMAL = Context(prec=34)


def _one(s: float, a: float) -> float:
    if a == 0.0:
        return 1.0
    return float(_DECIMAL.power(_DECIMAL.add(Decimal(1), Decimal(s)), -Decimal(a)))


def staleness_weight(staleness: np.ndarray | int, a: float = 0.5) -> np.ndarray | float:
    """Polynomial staleness weight ``(1 + s)^-a``; an int gives a float, an array a float64 array.

    ``s`` counts model versions (non-negative, finite); ``a >= 0`` sets how fast weight decays
    (``a = 0`` ignores staleness). The result is the same float on every machine.
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
