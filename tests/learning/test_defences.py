"""The default rule's defences against evasive attackers, and what they must not cost honest nodes.

* Shared offset: attackers who each add their own noise are no near copies, yet their deviations
  from the robust centre point one way; the rule drops them and scores them above every honest
  update (detection).
* Small networks: a 4-node federation of two label-skew pairs lost one pair round after round
  (the second cluster was judged against the single within-pair distance of the first).
"""

from __future__ import annotations

import numpy as np

from learning.aggregation import aggregate
from learning.attacks import craft_updates


def _noise_dominated(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Honest updates as the product's pipeline makes them: a small common signal under DP noise."""
    signal = rng.normal(size=d) * 0.002
    return (signal + 0.01 * rng.normal(size=(n, d))).astype(np.float32)


def test_noisy_colluders_are_caught_and_ranked_above_every_honest_update() -> None:
    """Reproduces the evasive attackers: before the shared-offset test the rule accepted them all
    and scored them below the honest updates."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        honest = _noise_dominated(14, 5000, rng)
        evil = craft_updates("ipm", honest[:6], honest, rng, eps=1.0, jitter=1.0)
        assert min(np.linalg.norm(evil[i] - evil[j]) for i in range(6) for j in range(i)) > 0.5 * np.median(
            [np.linalg.norm(honest[i] - honest[j]) for i in range(14) for j in range(i)])   # no near copies
        x = np.concatenate([honest, evil])
        res = aggregate("clustering", x, np.ones(20), seed=seed)
        assert not res.accepted[14:].any(), res.reasons[14:]
        assert res.scores[14:].min() > res.scores[:14].max()
        assert res.accepted[:14].sum() >= 13


def test_honest_noise_is_not_a_shared_offset() -> None:
    rejected = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        res = aggregate("clustering", _noise_dominated(20, 5000, rng), np.ones(20), seed=seed)
        rejected += sum(r == "clustering: shared offset" for r in res.reasons)
    assert rejected == 0


def test_two_label_skew_pairs_of_a_four_node_network_are_all_accepted() -> None:
    """Reproduces the 4-node testnet: before the fix one pair was rejected in most rounds."""
    rejected = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        d = 2000
        common = rng.normal(size=d)
        skew = rng.normal(size=(2, d)) * 0.8          # two label distributions, two nodes each
        x = (common + skew[[0, 0, 1, 1]] + 0.6 * rng.normal(size=(4, d))).astype(np.float32)
        res = aggregate("clustering", x, np.ones(4), seed=seed)
        rejected += int((~res.accepted).sum())
    assert rejected <= 1, f"{rejected} honest updates of 120 rejected"


def test_offset_test_can_be_switched_off() -> None:
    rng = np.random.default_rng(0)
    honest = _noise_dominated(14, 5000, rng)
    x = np.concatenate([honest, craft_updates("ipm", honest[:6], honest, rng, eps=3.0, jitter=1.0)])
    res = aggregate("clustering", x, np.ones(20), seed=0, offset=0.0)
    assert res.info["shared_offset"] == 0
