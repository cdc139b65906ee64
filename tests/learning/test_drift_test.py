"""The default rule's drift test: updates that point against the way the model has been moving go."""

from __future__ import annotations

import numpy as np
import pytest

from learning.aggregation import aggregate
from learning.round import drift


def _late_round(rng: np.random.Generator, flippers: int, *, d: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """20 updates late in training, when honest ones barely agree (cosine about 0.15 to the way the
    model moves, ``reference``); ``flippers`` of them send their own update reversed."""
    reference = rng.standard_normal(d)
    reference /= np.linalg.norm(reference)
    x = 0.15 * reference + rng.uniform(0.8, 1.2, (20, 1)) * rng.standard_normal((20, d)) / np.sqrt(d)
    x[20 - flippers:] *= -1.0
    return x.astype(np.float32), reference.astype(np.float32)


@pytest.mark.parametrize("flippers", [4, 8])
def test_sign_flippers_the_centre_lets_in_point_against_the_drift_and_go(flippers: int) -> None:
    x, reference = _late_round(np.random.default_rng(flippers), flippers)
    byzantine = np.arange(20) >= 20 - flippers
    without = aggregate("clustering", x, np.ones(20), seed=0)
    assert without.accepted[byzantine].any()          # the centre leans toward them: not all caught
    res = aggregate("clustering", x, np.ones(20), seed=0, reference=reference)
    drifting = [r == "clustering: against the model's drift" for r in res.reasons]
    assert drifting == byzantine.tolist() and res.info["against_drift"] == flippers
    assert res.accepted[~byzantine].sum() >= 18 - flippers    # phase 2 may reject one at the edge
    assert res.scores[byzantine].min() > max(1.0, res.scores[~byzantine].max())
    assert float(res.vector @ reference) > float(without.vector @ reference)


def test_a_drift_the_honest_majority_points_against_tests_nothing() -> None:
    """Had attackers steered the model, honest updates would point back against its drift: then the
    median cosine is not positive and nobody is dropped for it, so corrections are never locked out."""
    x, reference = _late_round(np.random.default_rng(1), 8)
    res = aggregate("clustering", x, np.ones(20), seed=0, reference=-reference)
    assert res.info["against_drift"] == 0
    assert not any(r == "clustering: against the model's drift" for r in res.reasons)


def test_small_rounds_a_zero_reference_and_drift_off_test_nothing() -> None:
    x, reference = _late_round(np.random.default_rng(2), 4)
    assert aggregate("clustering", x[7:], np.ones(13), seed=0, reference=reference).info["against_drift"] == 4
    assert aggregate("clustering", x[11:], np.ones(9), seed=0, reference=reference).info["against_drift"] == 0
    assert aggregate("clustering", x, np.ones(20), seed=0, reference=np.zeros_like(reference)).info["against_drift"] == 0
    assert aggregate("clustering", x, np.ones(20), seed=0, reference=reference, drift=False).info["against_drift"] == 0


@pytest.mark.parametrize("bad", [np.zeros(3, dtype=np.float32), np.full(2000, np.nan, dtype=np.float32)])
def test_a_malformed_reference_is_refused(bad: np.ndarray) -> None:
    x, _ = _late_round(np.random.default_rng(3), 4)
    with pytest.raises(ValueError, match="reference"):
        aggregate("clustering", x, np.ones(20), reference=bad)


def test_the_drift_is_how_the_model_moved_since_the_oldest_base() -> None:
    model = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert drift(model, None) is None and drift(model, model.copy()) is None
    moved = drift(model, np.array([1.0, 1.5, 4.0], dtype=np.float32))
    assert moved is not None and moved.dtype == np.float32 and moved.tolist() == [0.0, 0.5, -1.0]
