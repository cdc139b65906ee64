"""The default rule's direction test: updates that push against the majority's direction go."""

from __future__ import annotations

import numpy as np
import pytest

from learning.aggregation import aggregate
from learning.aggregation.direction import cosines_to_centre


def _round(rng: np.random.Generator, attackers: int, *, d: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """20 updates: honest ones share a direction under a non-IID spread of sizes (cosine 0.3-0.6
    to their mean); ``attackers`` send noisy inner-product manipulation (-0.5 x the honest mean
    plus noise of the honest spread each), so no two of them are near copies and none is far."""
    common = rng.standard_normal(d)
    common *= 0.45 / np.linalg.norm(common)
    spread = rng.uniform(0.5, 1.5, (20, 1)) * rng.standard_normal((20, d)) / np.sqrt(d)
    x = common + spread
    x[20 - attackers:] = -0.5 * x[:20 - attackers].mean(axis=0) + spread[20 - attackers:]
    byzantine = np.arange(20) >= 20 - attackers
    return x.astype(np.float32), byzantine


@pytest.mark.parametrize("attackers", [4, 8])
def test_noisy_inner_product_manipulators_are_dropped_and_ranked_first(attackers: int) -> None:
    x, byzantine = _round(np.random.default_rng(attackers), attackers)
    # the shared-offset test catches 4 of 20 (not 8: too many for its MADs); without it,
    # distance alone lets them in
    off = aggregate("clustering", x, np.ones(20), seed=0, direction=0.0, offset=0.0)
    assert off.accepted[byzantine].all()
    res = aggregate("clustering", x, np.ones(20), seed=0, offset=0.0)
    against = np.array([r == "clustering: against the majority" for r in res.reasons])
    assert against.tolist() == byzantine.tolist()
    assert res.accepted[~byzantine].sum() >= 18 - attackers    # phase 2 may reject one or two at the edge
    assert res.info["against"] == attackers
    assert res.scores[byzantine].min() > max(1.0, res.scores[~byzantine].max())
    honest_mean = x[~byzantine].mean(axis=0)
    assert float(res.vector @ honest_mean) > float(off.vector @ honest_mean)
    assert aggregate("clustering", x, np.ones(20), seed=0).accepted.tolist() == res.accepted.tolist()


def test_honest_updates_that_barely_agree_are_all_kept() -> None:
    rng = np.random.default_rng(5)
    d = 2000
    common = rng.standard_normal(d)
    common *= 0.25 / np.linalg.norm(common)            # honest cosines to the centre 0.15-0.45
    x = (common + rng.uniform(0.5, 1.5, (20, 1)) * rng.standard_normal((20, d)) / np.sqrt(d)).astype(np.float32)
    res = aggregate("clustering", x, np.ones(20), seed=0)
    assert res.info["against"] == 0


def test_below_ten_updates_there_is_no_direction_test() -> None:
    x, _ = _round(np.random.default_rng(6), 8)
    res = aggregate("clustering", x[8:17], np.ones(9), seed=0)
    assert res.info["against"] == 0


@pytest.mark.parametrize("direction", [-0.1, 1.0, float("nan")])
def test_direction_share_must_be_in_zero_one(direction: float) -> None:
    x, _ = _round(np.random.default_rng(7), 4)
    with pytest.raises(ValueError, match="direction"):
        aggregate("clustering", x, np.ones(20), direction=direction)



def _aligned(reference: np.ndarray, gain: float):
    """A public set that scores a candidate by its cosine to ``reference``, ``gain`` per unit."""
    def evaluate(v: np.ndarray) -> float:
        return float(0.5 + gain * v @ reference / (np.linalg.norm(v) * np.linalg.norm(reference) + 1e-30))
    return evaluate


def test_a_weak_group_goes_for_a_clear_validation_gain_and_only_then() -> None:
    """Late in training attackers' cosines to the centre rise above a quarter of the median, but
    k-means still isolates them: a group whose median cosine is below half the reference's is
    offered for dropping, and goes if the public set is better without it by the margin."""
    rng = np.random.default_rng(3)
    d = 2000
    common = rng.standard_normal(d)
    common *= 0.45 / np.linalg.norm(common)
    x = common + rng.uniform(0.5, 1.5, (20, 1)) * rng.standard_normal((20, d)) / np.sqrt(d)
    x[12:] -= 0.85 * common                           # a third of the honest push, each with its own noise
    x = x.astype(np.float32)
    byzantine = np.arange(20) >= 12
    clear, slight = _aligned(x[:12].mean(axis=0), 0.5), _aligned(x[:12].mean(axis=0), 0.01)
    res = aggregate("clustering", x, np.ones(20), seed=0, offset=0.0, evaluate=clear)
    assert res.info["against"] == 0                   # no single update is below a quarter of the median
    assert not res.accepted[byzantine].any() and res.accepted[~byzantine].all()
    assert {res.reasons[i] for i in np.flatnonzero(byzantine)} == {"clustering: cluster outlier"}
    assert res.scores[byzantine].min() > 1.0
    assert aggregate("clustering", x, np.ones(20), seed=0, offset=0.0, evaluate=slight).accepted.all()
    assert aggregate("clustering", x, np.ones(20), seed=0, offset=0.0, direction=0.0, evaluate=clear).accepted.all()




def _turned_away(x: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` with its last row replaced by an update of the median honest length whose cosine to the
    rule's centre is ``share`` times the median cosine (bisection on its lean toward the mean)."""
    mean = x[:-1].astype(np.float64).mean(axis=0)
    unit = mean / np.linalg.norm(mean)
    other = rng.standard_normal(unit.size)
    other -= (other @ unit) * unit
    other /= np.linalg.norm(other)
    norm = float(np.median(np.linalg.norm(x[:-1], axis=1)))
    lo, hi = 0.0, 1.0
    for _ in range(40):
        lean = (lo + hi) / 2
        x[-1] = norm * (lean * unit + np.sqrt(1 - lean * lean) * other)
        g = x.astype(np.float64) @ x.astype(np.float64).T
        cos = cosines_to_centre(g, np.arange(len(x)))
        lo, hi = (lean, hi) if cos[-1] < share * np.median(cos) else (lo, lean)
    return x


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_an_update_between_a_quarter_and_half_the_median_cosine_is_kept_but_suspicious(seed: int) -> None:
    """The adaptive attacker (the rule in its loop) turns away from the majority as far as the
    drop threshold allows: kept, but below half the median cosine it scores above 1 (1.5 at the
    threshold), above every honest update, however ordinary its length and distance."""
    rng = np.random.default_rng(seed)
    x = _turned_away(_round(rng, 0)[0], 0.375, rng)
    res = aggregate("clustering", x, np.ones(20), seed=1)
    assert res.accepted[19] and res.reasons[19] == "" and res.info["against"] == 0
    assert res.scores[19] == pytest.approx(1.25, abs=1e-3)      # (1 - 0.375) / 0.5
    assert res.scores[19] > res.scores[:19].max()
