"""Restricted k-means in kernel form: every cluster holds at least a minimum number of points.

Points are the rows behind a Gram matrix, so centres are coefficient vectors and no step touches
the d-dimensional data. A minimum size keeps a cluster from being one stray point, so clusters
describe groups of clients. Seeding is k-means++ from a seeded generator; every distance is a
fixed-order computation on the exact Gram matrix (:mod:`.exact`), so labels agree on every machine.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from learning.borrowed import load_module

from . import exact


def membership(labels: np.ndarray, k: int) -> np.ndarray:
    """(n, k) matrix whose column h holds the averaging coefficients of cluster h."""
    a = np.zeros((labels.shape[0], k))
    a[np.arange(labels.shape[0]), labels] = 1.0
    return a / np.maximum(a.sum(axis=0), 1.0)


def quad_forms(g: np.ndarray, coefs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``g @ coefs`` (n, k) and the squared norms ``coefs[:, h] @ g @ coefs[:, h]`` (k,)."""
    ga = np.stack([exact.matvec(g, coefs[:, h]) for h in range(coefs.shape[1])], axis=1)
    return ga, np.array([exact.total(coefs[:, h] * ga[:, h]) for h in range(coefs.shape[1])])


def centre_sq_dists(g: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """Squared distances (n, k) from every update to the points ``rows @ coefs[:, h]``."""
    ga, cc = quad_forms(g, coefs)
    return exact.clip_negative(np.diagonal(g)[:, None] - 2.0 * ga + cc[None, :])


def _lsap() -> ModuleType:
    """scipy's compiled ``linear_sum_assignment`` without ``scipy.optimize``'s ``__init__`` (every
    solver, ``scipy.special``, ``numpy.f2py``: +22 MB of private memory in each daemon that once
    meets an undersized cluster); see :mod:`learning.borrowed`."""
    return load_module("scipy", "optimize", "_lsap", name="learning.aggregation._lsap", extension=True)


def _assign(dist: np.ndarray, min_size: int) -> np.ndarray:
    """Nearest-centre labels such that every cluster gets at least ``min_size`` updates.

    Exact: cluster h offers ``min_size`` mandatory slots at cost ``dist[:, h]`` and the remaining
    slots cost the distance to the nearest centre; a minimum-cost assignment (Hungarian method)
    then solves the size-constrained problem of Bradley, Bennett and Demiriz.
    """
    n, k = dist.shape
    nearest = np.argmin(dist, axis=1)
    if np.bincount(nearest, minlength=k).min() >= min_size:
        return nearest
    cost = np.concatenate([np.repeat(dist, min_size, axis=1),
                           np.repeat(dist.min(axis=1)[:, None], n - k * min_size, axis=1)], axis=1)
    _, cols = _lsap().linear_sum_assignment(cost)
    return np.where(cols < k * min_size, cols // max(min_size, 1), nearest)


def restricted_kmeans(g: np.ndarray, sq: np.ndarray, k: int, min_size: int, rng: np.random.Generator, *,
                      n_init: int = 3, max_iter: int = 50) -> np.ndarray:
    """Labels of the best of ``n_init`` k-means++ seeded runs (lowest inertia, first on ties)."""
    n = g.shape[0]
    best, best_inertia = np.zeros(n, dtype=np.int64), math.inf
    for _ in range(n_init):
        centres = [int(rng.integers(n))]
        for _ in range(1, k):
            d2 = sq[:, centres].min(axis=1)
            total = exact.total(d2)
            centres.append(int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n)))
        labels = _assign(sq[:, centres], min_size)
        for _ in range(max_iter):
            new = _assign(centre_sq_dists(g, membership(labels, k)), min_size)
            if np.array_equal(new, labels):
                break
            labels = new
        inertia = exact.total(centre_sq_dists(g, membership(labels, k))[np.arange(n), labels])
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best
