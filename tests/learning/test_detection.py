"""Detection statistics against a hand-worked example and scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from learning.aggregation import aggregate
from learning.detection import detection_stats


def test_hand_example() -> None:
    truth = np.array([True, True, False, False, False, True])
    scores = np.array([0.9, 0.4, 0.35, 0.8, 0.1, 0.7])
    accepted = np.array([False, True, True, False, True, False])
    st_ = detection_stats(truth, scores, accepted)
    # rejected = {0, 3, 5}: tp = {0, 5}, fp = {3}, fn = {1}, tn = {2, 4}
    assert (st_.tp, st_.fp, st_.fn, st_.tn) == (2, 1, 1, 2)
    assert st_.precision == pytest.approx(2 / 3) and st_.recall == pytest.approx(2 / 3)
    assert st_.f1 == pytest.approx(2 / 3) and st_.accuracy == pytest.approx(4 / 6)
    assert st_.confusion == [[2, 1], [1, 2]]
    # pairs (mal, honest) ranked correctly: 0.9 beats all 3, 0.7 beats 2, 0.4 beats 2 -> 7/9
    assert st_.roc_auc == pytest.approx(7 / 9)
    assert st_.roc_auc == pytest.approx(roc_auc_score(truth, scores))
    assert st_.pr_auc == pytest.approx(average_precision_score(truth, scores))
    assert st_.roc_curve["fpr"][0] == 0.0 and st_.roc_curve["tpr"][-1] == 1.0
    json.dumps(st_.to_dict())


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_matches_sklearn(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 40))
    truth = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    scores = np.array(data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)), dtype=float)  # many ties
    accepted = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    st_ = detection_stats(truth, scores, accepted)
    flagged = ~accepted
    p, r, f, _ = precision_recall_fscore_support(truth, flagged, average="binary", zero_division=0)
    assert (st_.precision, st_.recall, st_.f1) == pytest.approx((p, r, f))
    assert st_.confusion == confusion_matrix(truth, flagged, labels=[False, True]).tolist()
    if truth.any() and not truth.all():
        assert st_.roc_auc == pytest.approx(roc_auc_score(truth, scores))
    else:
        assert math.isnan(st_.roc_auc)
    if truth.any():
        assert st_.pr_auc == pytest.approx(average_precision_score(truth, scores))


def test_one_class_and_errors() -> None:
    st_ = detection_stats(np.zeros(4, bool), np.arange(4.0), np.ones(4, bool))
    assert math.isnan(st_.roc_auc) and math.isnan(st_.pr_auc) and st_.precision == 0.0
    assert st_.to_dict()["roc_auc"] is None
    with pytest.raises(ValueError, match="equal-length"):
        detection_stats(np.zeros(3, bool), np.zeros(4), np.ones(3, bool))
    with pytest.raises(ValueError, match="NaN"):
        detection_stats(np.zeros(2, bool), np.array([0.0, np.nan]), np.ones(2, bool))


def test_with_an_aggregation_result() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 50)).astype(np.float32)
    x[:5] += 10.0
    truth = np.arange(20) < 5
    res = aggregate("multikrum", x, f=5)
    st_ = detection_stats(truth, res.scores, res.accepted)
    assert st_.recall == 1.0 and st_.roc_auc == 1.0 and st_.pr_auc == 1.0
