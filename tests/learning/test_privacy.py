"""Gaussian mechanism and the per-node RDP accountant (checked against Opacus itself)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from learning.privacy import PrivacyAccountant, PrivacyBudgetExhausted, clip_and_noise


def test_clip_only_and_below_bound() -> None:
    rng = np.random.default_rng(0)
    big = np.full(100, 1.0, np.float32)                     # norm 10
    out, norm = clip_and_noise(big, 2.0, 0.0, rng)
    assert norm == pytest.approx(10.0)
    assert np.linalg.norm(out) == pytest.approx(2.0, rel=1e-6)
    small = np.full(100, 0.01, np.float32)
    out, _ = clip_and_noise(small, 2.0, 0.0, rng)
    assert np.array_equal(out, small)                        # inside the ball: unchanged


def test_noise_has_the_right_scale() -> None:
    rng = np.random.default_rng(1)
    out, _ = clip_and_noise(np.zeros(200_000, np.float32), 0.5, 2.0, rng)
    assert out.dtype == np.float32
    assert out.std() == pytest.approx(1.0, rel=0.01)        # z * C = 2 * 0.5
    assert abs(out.mean()) < 0.01


def test_clip_rejects_bad_input() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError):
        clip_and_noise(np.zeros(3, np.float32), 0.0, 1.0, rng)
    with pytest.raises(ValueError):
        clip_and_noise(np.array([np.nan], np.float32), 1.0, 1.0, rng)


def test_epsilon_equals_opacus_exactly() -> None:
    ours = PrivacyAccountant(math.inf, delta=1e-5, noise_multiplier=1.1, sample_rate=0.05)
    ref = RDPAccountant()
    segments = [(1.1, 0.05, 7), (0.8, 1.0, 3), (1.1, 0.05, 4), (2.0, 0.2, 1)]
    for z, q, n in segments:
        for _ in range(n):
            ours.release(1, z, q)
            ref.step(noise_multiplier=z, sample_rate=q)
        assert ours.epsilon() == ref.get_epsilon(delta=1e-5)
    assert ours.history == ref.history
    assert ours.steps == 15
    assert ours.epsilon(1e-3) == ref.get_epsilon(delta=1e-3)


@pytest.mark.parametrize(("q", "sigma", "steps", "releases"), [(32 / 400, 1.0, 52, 3), (1 / 13, 1.1, 13, 5),
                                                                 (0.01, 0.7, 400, 2)])
def test_a_release_of_many_dp_sgd_steps_is_what_opacus_gets_for_those_steps(
        q: float, sigma: float, steps: int, releases: int) -> None:
    """A local-dp release composes ``steps`` DP-SGD steps at once: the epsilon is Opacus' for
    the same (q, sigma, steps), stepped one at a time."""
    ours = PrivacyAccountant(math.inf, delta=1e-5, noise_multiplier=sigma, sample_rate=q)
    ref = RDPAccountant()
    for _ in range(releases):
        ours.release(steps)
        for _ in range(steps):
            ref.step(noise_multiplier=sigma, sample_rate=q)
        assert ours.epsilon() == ref.get_epsilon(delta=1e-5)
    assert ours.history == ref.history and ours.steps == steps * releases


def test_budget_refuses_before_exceeding() -> None:
    acc = PrivacyAccountant(5.0, delta=1e-5, noise_multiplier=3.0, sample_rate=1.0)
    released = 0
    while acc.can_release():
        acc.release()
        released += 1
    assert released >= 2
    assert acc.epsilon() <= 5.0 < acc.epsilon_after()
    history = acc.history
    with pytest.raises(PrivacyBudgetExhausted, match="above the budget"):
        acc.release()
    assert acc.history == history                             # a refused release spends nothing
    ref = RDPAccountant()
    for _ in range(released + 1):
        ref.step(noise_multiplier=3.0, sample_rate=1.0)
    assert ref.get_epsilon(delta=1e-5) > 5.0                  # one more really would have exceeded it


def test_state_round_trip_through_json() -> None:
    acc = PrivacyAccountant(10.0, delta=1e-6, noise_multiplier=1.3, sample_rate=0.1)
    for _ in range(5):
        acc.release()
    acc.release(3, 0.9, 0.5)
    state = json.loads(json.dumps(acc.to_dict()))
    back = PrivacyAccountant.from_dict(state)
    assert back.epsilon() == acc.epsilon() and back.history == acc.history
    assert back.epsilon_budget == 10.0 and back.sample_rate == 0.1


@pytest.mark.parametrize("state", [
    {},
    {"epsilon_budget": 1.0, "delta": 1e-5, "noise_multiplier": 1.0, "sample_rate": 1.0, "history": [[1.0, 2.0, 1]]},
    {"epsilon_budget": 1.0, "delta": 1e-5, "noise_multiplier": 1.0, "sample_rate": 1.0, "history": [[1.0, 1.0, 0]]},
    {"epsilon_budget": -1.0, "delta": 1e-5, "noise_multiplier": 1.0, "sample_rate": 1.0, "history": []},
    {"epsilon_budget": 1.0, "delta": 1e-5, "noise_multiplier": 1.0, "sample_rate": 1.0, "history": [["x"]]},
])
def test_from_dict_rejects_bad_state(state: dict) -> None:
    with pytest.raises(ValueError):
        PrivacyAccountant.from_dict(state)


def test_parameter_validation() -> None:
    with pytest.raises(ValueError):
        PrivacyAccountant(1.0, delta=0.0)
    with pytest.raises(ValueError):
        PrivacyAccountant(1.0, sample_rate=0.0)
    acc = PrivacyAccountant(1.0)
    with pytest.raises(ValueError):
        acc.release(noise_multiplier=-1.0)
    for steps in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="at least one step"):
            acc.release(steps)
    assert acc.history == []
