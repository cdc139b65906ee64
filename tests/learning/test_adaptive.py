"""Adaptive attacks do what they say: noisy attackers differ, the adaptive one stays accepted by
the rule it tests against, drift stays inside the radius in one fixed direction, constrain-and-scale
respects its bounds, the distributed backdoor splits the trigger, sybils join in one burst."""

from __future__ import annotations

import numpy as np
import pytest

from learning.aggregation import aggregate
from learning.attacks import add_trigger, craft_updates, poison_data
from learning.sim import SimConfig, Simulator


def _round(b: int = 6, h: int = 14, d: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    honest = (rng.normal(size=d) * 0.3 + rng.normal(size=(b + h, d))).astype(np.float32)
    return honest[:b], honest[b:]


def _median_radius(known: np.ndarray) -> float:
    mean = known.astype(np.float64).mean(axis=0)
    return float(np.median(np.linalg.norm(known - mean, axis=1)))


@pytest.mark.parametrize("name", ["alie", "ipm", "minmax", "sign_flip"])
def test_noisy_attackers_are_not_identical_but_keep_their_mean(name: str) -> None:
    benign, observed = _round()
    plain = craft_updates(name, benign, observed, np.random.default_rng(1))
    noisy = craft_updates(name, benign, observed, np.random.default_rng(1), jitter=1.0)
    gaps = [np.linalg.norm(noisy[i] - noisy[j]) for i in range(6) for j in range(i)]
    assert min(gaps) > 0.5 * _median_radius(observed)
    assert np.linalg.norm(noisy.mean(axis=0) - plain.mean(axis=0)) < 0.7 * np.linalg.norm(noisy[0] - plain[0])


def test_adaptive_attack_is_accepted_by_the_rule_in_its_loop_and_pushes_as_far_as_it_may() -> None:
    benign, observed = _round()

    def accepts(obs: np.ndarray, crafted: np.ndarray) -> np.ndarray:
        rows = np.concatenate([obs, crafted]).astype(np.float32)
        return aggregate("clustering", rows, np.ones(len(rows)), seed=1).accepted[len(obs):]

    crafted = craft_updates("adaptive", benign, observed, np.random.default_rng(2), accepts=accepts, jitter=1.0)
    assert accepts(observed, crafted).all()
    mean = np.concatenate([observed, benign]).astype(np.float64).mean(axis=0)
    push = -(crafted.mean(axis=0) - mean) @ mean / np.linalg.norm(mean)
    assert push > 0                                 # it moved against the honest mean
    bigger = crafted + 4.0 * push * (-mean / np.linalg.norm(mean)).astype(np.float32)
    assert not accepts(observed, bigger).all()      # and no much larger push would pass


def test_drift_stays_inside_the_radius_in_one_direction_every_round() -> None:
    directions = []
    for seed in range(3):
        benign, observed = _round(seed=seed)
        crafted = craft_updates("drift", benign, observed, np.random.default_rng(seed))
        known = np.concatenate([observed, benign]).astype(np.float64)
        offset = crafted[0] - known.mean(axis=0)
        assert np.linalg.norm(offset) <= _median_radius(known) * (1 + 1e-5)
        directions.append(offset / np.linalg.norm(offset))
    assert min(float(a @ b) for a in directions for b in directions) > 0.999


def test_constrain_and_scale_respects_the_norm_and_distance_bounds() -> None:
    benign, observed = _round()
    known = np.concatenate([observed, benign]).astype(np.float64)
    crafted = craft_updates("constrain_scale", 0.2 * benign, observed, np.random.default_rng(0), max_norm=12.0)
    assert (np.linalg.norm(crafted, axis=1) <= 12.0 * (1 + 1e-5)).all()
    assert (np.linalg.norm(crafted - known.mean(axis=0), axis=1) <= 0.9 * _median_radius(known) * (1 + 1e-5)).all()
    # boosted: farther from the mean than the attacker's own update was
    mean = known.mean(axis=0)
    assert (np.linalg.norm(crafted - mean, axis=1) > np.linalg.norm(0.2 * benign - mean, axis=1)).all()


def test_distributed_backdoor_parts_make_up_the_whole_trigger() -> None:
    x = np.zeros((1, 28 * 28), np.float32)
    shape = (1, 28, 28)
    whole = add_trigger(x, shape)
    parts = [add_trigger(x, shape, part=p, parts=3) for p in range(3)]
    assert all(0 < (p != 0).sum() < (whole != 0).sum() for p in parts)
    np.testing.assert_array_equal(np.maximum.reduce(parts), whole)
    y = np.arange(10).repeat(10)
    px, py = poison_data("dba", np.zeros((100, 784), np.float32), y, np.random.default_rng(0), 10, shape,
                         part=1, parts=3, fraction=0.5)
    stamped = (px != 0).any(axis=1)
    assert stamped.sum() == 50 and (py[stamped] == 0).all()
    np.testing.assert_array_equal(px[stamped][0], parts[1][0])


def test_sybils_join_all_at_once_at_the_burst_round() -> None:
    cfg = SimConfig.of(dataset="synthetic", partition="natural", model="logreg", num_nodes=10, rounds=4,
                       attack="sign_flip", byzantine_fraction=0.3, byzantine_from_round=2, topk_fraction=None,
                       clip_norm=None, noise_multiplier=0.0, local_epochs=1)
    result = Simulator(cfg).run()
    assert [r.num_byzantine for r in result.rounds] == [0, 0, 3, 3]
    assert [r.num_updates for r in result.rounds] == [7, 7, 10, 10]
