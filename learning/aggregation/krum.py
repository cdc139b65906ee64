"""Distance-based selection rules: Krum, Multi-Krum (Blanchard et al. 2017) and Bulyan (El Mhamdi
et al. 2018).

Krum's score (paper eq. 7) of update i is the sum of its squared distances to its ``n - f - 2``
nearest neighbours; the update with the lowest score is the one best surrounded by others. All
distances come from one exact Gram matrix (:mod:`.exact`), so the rules cost one O(n^2 d) product
and then work in n-space; scores are sums in sorted order. Ties go to the lowest index (stable
ordering) so every delegate selects alike.

Requirements: Krum and Multi-Krum need ``n >= 2f + 3``, Bulyan ``n >= 4f + 3``. ``f=None`` takes
the largest ``f`` the rule supports; a larger ``f`` is reduced to it and the reduction is written
into ``info['note']`` and the rejection reasons. Fewer than 3 updates is a ValueError: no
neighbourhood can be formed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._core import AggregationResult, Inputs, rejection_reasons, resolve_f, result, weighted_mean
from .exact import row_sums
from .coordinate import closest_to_median_mean


def iterative_krum(sq: np.ndarray, f: int, count: int) -> tuple[list[int], np.ndarray]:
    """Select ``count`` updates by Krum, removing each winner before scoring again.

    Returns the winners in selection order and the first-round scores (all n updates). Each row's
    distances are sorted once; a round then sums the smallest ``s - f - 2`` distances to the still
    active updates with a mask, an O(n^2) step instead of a re-sort.
    """
    n = sq.shape[0]
    order = np.argsort(sq, axis=1, kind="stable")
    vals = np.take_along_axis(sq, order, axis=1)
    active = np.ones(n, dtype=bool)
    chosen: list[int] = []
    first = np.zeros(n)
    for step in range(count):
        size = int(active.sum())
        neighbours = min(max(size - f - 2, 0), size - 1)
        live = active[order]
        # The first active entry of an active row is a zero (itself or an identical update), so
        # the smallest neighbours + 1 active entries sum to the smallest neighbours distances.
        keep = live & (np.cumsum(live, axis=1) <= neighbours + 1)
        scores = row_sums(np.where(keep, vals, 0.0))
        if step == 0:
            first = scores.copy()
        scores[~active] = np.inf
        winner = int(np.argmin(scores))
        chosen.append(winner)
        active[winner] = False
    return chosen, first


def _krum_f(inp: Inputs, rule: str) -> tuple[int, str]:
    return resolve_f(inp.f, (inp.n - 3) // 2, rule, "needs n >= 2f + 3")


def krum(inp: Inputs) -> AggregationResult:
    """The single update with the lowest Krum score; weights are not used."""
    f, note = _krum_f(inp, "krum")
    (winner,), scores = iterative_krum(inp.sq_dists, f, 1)
    accepted = np.zeros(inp.n, dtype=bool)
    accepted[winner] = True
    return result(inp.updates[winner], accepted, scores, rejection_reasons(accepted, "krum: not selected", note),
                  f=f, note=note)


def check_multikrum(p: Mapping[str, Any]) -> None:
    """Raise ValueError for an ``m`` :func:`multikrum` can take in no round (its upper bound, the
    round's update count, is checked when the round runs)."""
    m = p["m"]
    if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1):
        raise ValueError(f"multikrum: m must be None or an integer >= 1, got {m!r}")


def multikrum(inp: Inputs, *, m: int | None = None) -> AggregationResult:
    """Weighted average of the ``m`` updates with the lowest Krum scores (default ``m = n - f``).

    Scores are computed once over all updates (El Mhamdi et al.'s Multi-Krum), not re-scored
    after each pick.
    """
    f, note = _krum_f(inp, "multikrum")
    count = inp.n - f if m is None else m
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= inp.n:
        raise ValueError(f"multikrum: m must be an integer in [1, {inp.n}], got {m!r}")
    _, scores = iterative_krum(inp.sq_dists, f, 1)
    selected = np.sort(np.argsort(scores, kind="stable")[:count])
    accepted = np.zeros(inp.n, dtype=bool)
    accepted[selected] = True
    vector = weighted_mean(inp.updates, inp.weights, selected)
    return result(vector, accepted, scores, rejection_reasons(accepted, "multikrum: not selected", note),
                  f=f, m=int(count), note=note)


def bulyan(inp: Inputs) -> AggregationResult:
    """Bulyan: pick ``theta = n - 2f`` updates by iterated Krum, then per coordinate average the
    ``beta = theta - 2f`` selected values closest to their median. Weights are not used."""
    f, note = resolve_f(inp.f, (inp.n - 3) // 4, "bulyan", "needs n >= 4f + 3")
    theta = inp.n - 2 * f
    chosen, scores = iterative_krum(inp.sq_dists, f, theta)
    selected = np.sort(np.asarray(chosen))
    accepted = np.zeros(inp.n, dtype=bool)
    accepted[selected] = True
    vector = closest_to_median_mean(inp.updates, selected, theta - 2 * f)
    return result(vector, accepted, scores, rejection_reasons(accepted, "bulyan: not selected", note),
                  f=f, note=note)
