"""The default rule's shared-offset test (phase 1a'' of :mod:`.clustering`): attackers who each
add their own noise.

Attackers who each add their own noise are no near copies, but what makes them attackers is the
offset they all share: seen from the robust centre (the geometric median of the updates the
near-copy and direction tests left), their deviations point the same way, while honest deviations
(local data, DP noise) are nearly independent. For each update, its ``partners``-th highest cosine
similarity to another update's deviation is its *partner similarity*; an update whose partner
similarity is positive and above the adaptive radius of all partner similarities (``offset`` MADs
above their median) belongs to a group sharing an offset. The caller skips the test below
``max(2 * partners + 2, SMALL)`` updates: the MAD of fewer similarities is no spread estimate, and
two honest nodes holding similar data share an offset too (on 8 Fashion-MNIST nodes the test
rejected one such honest node 9 times in 20 rounds and caught no more noisy IPM attackers than
phase 2 alone).

Deviations from the geometric median ``c`` of the rows: their Gram matrix is
``G - Gc 1' - 1 c'G + c'Gc``, all fixed-order steps on the exact Gram matrix, medians by sorting:
the same bits on every CPU.
"""

from __future__ import annotations

import numpy as np

from . import exact
from ._core import MAD_TO_SIGMA
from .geomed import weiszfeld_coefficients

OFFSET_FLOOR = 0.01     # cosine: a spread below this is no spread (equal similarities)


def partner_scores(g: np.ndarray, rows: np.ndarray, partners: int, offset: float) -> np.ndarray:
    """Per update (of ``rows``), its partner similarity over the adaptive radius, 0 where it is
    not positive (0 outside ``rows``)."""
    scores = np.zeros(g.shape[0])
    n = rows.size
    g = g[np.ix_(rows, rows)]
    coef, _ = weiszfeld_coefficients(g, np.ones(n))
    gc = exact.matvec(g, coef)
    dev = g - gc[:, None] - gc[None, :] + exact.total(coef * gc)
    norms = np.sqrt(exact.clip_negative(np.diagonal(dev).copy())) + 1e-300
    # A cosine lies in [-1, 1]; cancellation in the Gram identity at float32-limit values can
    # put it far outside (even at infinity), and one infinity made every score NaN.
    cos = np.clip(dev / norms[:, None] / norms[None, :], -1.0, 1.0)
    np.fill_diagonal(cos, -np.inf)
    similarity = -np.sort(-cos, axis=1)[:, partners - 1] + 0.0
    med = exact.median(similarity)
    sigma = max(MAD_TO_SIGMA * exact.median(np.abs(similarity - med)), OFFSET_FLOOR)
    limit = max(med + offset * sigma, OFFSET_FLOOR)
    scores[rows] = np.where(similarity > 0.0, similarity / limit, 0.0)
    return scores
