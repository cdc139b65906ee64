"""How well an aggregation rule tells malicious updates from honest ones.

Positive class = malicious. A rule "flags" an update when it rejects it (``accepted`` False);
precision, recall, F1 and the confusion matrix describe those verdicts. ``scores`` (higher = more
suspicious) describe the ranking independent of any threshold: ROC AUC (the probability that a
random malicious update outscores a random honest one, ties counting one half, as
``sklearn.metrics.roc_auc_score``) and PR AUC as average precision (as
``sklearn.metrics.average_precision_score``). Implemented with numpy so the learning package
needs no scikit-learn at run time; the tests check both against scikit-learn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class DetectionStats:
    """Detection quality. Undefined ratios (no positive predicted, one class only) are NaN for
    the AUCs and 0 for precision/recall/F1 (scikit-learn's ``zero_division=0``)."""

    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    confusion: list[list[int]]          # [[tn, fp], [fn, tp]]: rows true class, columns verdict
    roc_auc: float
    pr_auc: float
    roc_curve: dict[str, list[float]]   # fpr, tpr, thresholds (thresholds decreasing)
    pr_curve: dict[str, list[float]]    # precision, recall, thresholds (thresholds decreasing)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return {key: (None if isinstance(v, float) and np.isnan(v) else v) for key, v in asdict(self).items()}


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _curve_points(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct score threshold (descending)."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]   # last index of each run of equal scores
    tps = np.cumsum(t)[last]
    fps = (last + 1) - tps
    return tps.astype(np.float64), fps.astype(np.float64), s[last]


def detection_stats(is_malicious: np.ndarray, scores: np.ndarray, accepted: np.ndarray) -> DetectionStats:
    """Precision/recall/F1/confusion of the verdicts and ROC/PR of the scores."""
    truth = np.asarray(is_malicious, dtype=bool)
    score = np.asarray(scores, dtype=np.float64)
    acc = np.asarray(accepted, dtype=bool)
    if truth.ndim != 1 or truth.size == 0 or score.shape != truth.shape or acc.shape != truth.shape:
        raise ValueError(f"is_malicious, scores and accepted must be equal-length 1-D arrays, "
                         f"got {truth.shape}, {score.shape}, {acc.shape}")
    if np.isnan(score).any():
        raise ValueError("scores contain NaN")
    flagged = ~acc
    tp, fp = int((flagged & truth).sum()), int((flagged & ~truth).sum())
    fn, tn = int((~flagged & truth).sum()), int((~flagged & ~truth).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    pos, neg = int(truth.sum()), int((~truth).sum())
    tps, fps, thresholds = _curve_points(truth, score)
    if pos and neg:
        tpr, fpr = np.r_[0.0, tps / pos], np.r_[0.0, fps / neg]
        # Trapezoids on the integer counts: exact (a perfect ranking gives exactly 1.0).
        t_counts, f_counts = np.r_[0, tps].astype(np.int64), np.r_[0, fps].astype(np.int64)
        twice_area = int(np.sum(np.diff(f_counts) * (t_counts[1:] + t_counts[:-1])))
        roc_auc = twice_area / (2 * pos * neg)
    else:
        tpr = fpr = np.array([], dtype=np.float64)
        roc_auc = float("nan")
    if pos:
        prec = tps / (tps + fps)
        rec = tps / pos
        pr_auc = float(np.sum(np.diff(np.r_[0.0, rec]) * prec))
    else:
        prec = rec = np.array([], dtype=np.float64)
        pr_auc = float("nan")
    return DetectionStats(
        tp=tp, fp=fp, tn=tn, fn=fn, precision=precision, recall=recall, f1=f1,
        accuracy=(tp + tn) / truth.size, confusion=[[tn, fp], [fn, tp]], roc_auc=roc_auc, pr_auc=pr_auc,
        roc_curve={"fpr": fpr.tolist(), "tpr": tpr.tolist(),
                   "thresholds": np.r_[np.inf, thresholds].tolist() if pos and neg else []},
        pr_curve={"precision": prec.tolist(), "recall": rec.tolist(),
                  "thresholds": thresholds.tolist() if pos else []},
    )
