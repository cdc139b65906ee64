"""The default rule's clips of what it accepts, and what the feature clip takes as a score.

Split from :mod:`.clustering`, whose module docstring says why each clip exists (the median-norm
clip as FLAME uses it, the feature clip against data backdoors) and what they bought. Every factor
is a correctly rounded division of exact norms, so the aggregate stays bit-identical.
"""

from __future__ import annotations

import numpy as np

from . import exact
from ._core import FeatureScale, Inputs, robust_threshold


def norm_shrink(g: np.ndarray, accepted: np.ndarray, norm_clip: float) -> tuple[np.ndarray | None, float | None]:
    """Per update, the factor that brings its norm within ``norm_clip`` times the median norm of
    the accepted updates (1 for the shorter ones), and that limit; (None, None) when off."""
    if norm_clip <= 0:
        return None, None
    norms = np.sqrt(exact.clip_negative(np.diagonal(g).copy()))
    limit = norm_clip * exact.median(norms[accepted])
    return shrink_to(norms, limit), limit


def shrink_to(norms: np.ndarray, limit: np.ndarray | float) -> np.ndarray:
    """The factors (correctly rounded divisions) that bring each norm above ``limit`` down to it."""
    return np.where(norms > limit, limit / np.maximum(norms, 1e-300), 1.0)


def feature_shrink(inp: Inputs, accepted: np.ndarray, feature_clip: float) -> FeatureScale | None:
    """Per accepted update and feature group, the factor that brings the group's norm within
    ``feature_clip`` times the median of that group's norms over the accepted updates and the
    caller's witness rows of the senders none of whose updates is accepted (zero where that median
    is zero); None when off or when the caller gave no feature groups."""
    if feature_clip <= 0 or inp.groups is None:
        return None
    norms = inp.group_norms
    seen = norms[accepted] if inp.witness is None else np.vstack([norms[accepted], inp.witness.standing(accepted)])
    return shrink_to(norms, feature_clip * exact.column_medians(seen)), inp.groups


def clip_share_score(inp: Inputs, features: FeatureScale | None, radius: float) -> np.ndarray:
    """Per update, the share of its norm the feature clip removes, over the adaptive radius of
    all the shares (zeros without a clip). Fixed-order row sums and correctly rounded steps."""
    if features is None:
        return np.zeros(inp.n)
    sq = inp.group_norms * inp.group_norms
    cut = 1.0 - features[0]
    share = np.sqrt(exact.row_sums(cut * cut * sq)) / np.sqrt(np.maximum(exact.row_sums(sq), 1e-300))
    return share / max(robust_threshold(share, radius), 1e-300)
