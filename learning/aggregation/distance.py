"""The default rule's distance tests (:mod:`.clustering`): near copies (phase 1a), groups far from
the reference cluster (phase 1b) and single updates far from the geometric median of the
survivors (phase 2).

Every distance comes from the exact Gram matrix, every threshold is an adaptive radius
(:func:`._core.robust_threshold`) taken by sorting, so the tests decide the same on every CPU.
"""

from __future__ import annotations

import numpy as np

from . import exact
from ._core import robust_threshold
from .geomed import weiszfeld_coefficients

SMALL, SMALL_FLOOR = 10, 0.1   # below 10 distances their MAD is no spread estimate: sigma >= 10% of the median
GROUP_FLOOR = 0.05      # phase-1 radius is at least 5% of the typical distance: tolerates non-IID groups


def pairs(dist: np.ndarray, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Distances between members of ``a`` and ``b``, or among the distinct pairs of ``a``."""
    if b is not None:
        return dist[np.ix_(a, b)].ravel()
    return dist[np.ix_(a, a)][np.triu_indices(a.size, 1)]


def near_copies(dist: np.ndarray, collusion: float) -> np.ndarray:
    """Score per update: in (1, 2] for near copies (nearest neighbour within the collusion
    distance), 0 otherwise."""
    n = dist.shape[0]
    if collusion <= 0 or n < 3:
        return np.zeros(n)
    limit = collusion * exact.median(pairs(dist, np.arange(n)))
    nearest = np.where(np.eye(n, dtype=bool), np.inf, dist).min(axis=1)
    return np.where(nearest < limit, 2.0 - nearest / max(limit, 1e-300), 0.0)


def cluster_scores(dist: np.ndarray, labels: np.ndarray, k: int, ref: int, radius: float) -> np.ndarray:
    """Between-group distance of each cluster to the reference over the reference's radius."""
    groups = [np.flatnonzero(labels == h) for h in range(k)]
    within = pairs(dist, groups[ref])
    if within.size == 0:
        return np.zeros(k)
    thr = max(robust_threshold(within, radius, floor=GROUP_FLOOR), 1e-300)
    return np.array([0.0 if h == ref else exact.median(pairs(dist, groups[h], groups[ref])) / thr
                     for h in range(k)])


def outliers(g: np.ndarray, survivors: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Survivors within the radius of their geometric median, and distance/radius for all."""
    sub = np.flatnonzero(survivors)
    coef_sub, _ = weiszfeld_coefficients(g[np.ix_(sub, sub)], np.ones(sub.size))
    coef = np.zeros(g.shape[0])
    coef[sub] = coef_sub
    d = exact.dists_to_combination(g, coef)
    floor = SMALL_FLOOR if sub.size < SMALL else 0.01
    ratio = d / max(robust_threshold(d[sub], radius, floor=floor), 1e-300)
    return survivors & (ratio <= 1.0), ratio
