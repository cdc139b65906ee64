"""learning.round.run_round: the aggregation step a chain's delegates and the simulator both run.
Weights, staleness, trust, skipped rounds, and bit-for-bit repeatability."""

from __future__ import annotations

import math

import numpy as np

from learning.aggregation import DEFAULT_WEIGHT_CAP, staleness_weight
from learning.attacks import craft_updates
from learning.round import RoundOutcome, round_weights, run_round, stake_changes
from learning.settings import FLSettings

DIM = 120
MODEL = np.linspace(-0.5, 0.5, DIM, dtype=np.float32)


def honest(n: int, seed: int, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` updates scattered around a common direction, and that direction."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=DIM)
    return (mu + spread * rng.normal(size=(n, DIM))).astype(np.float32), mu.astype(np.float32)


def fresh(n: int) -> list[int]:
    return [0] * n


def test_no_updates_keep_the_model() -> None:
    out = run_round(FLSettings(), MODEL, np.zeros((0, DIM), np.float32), [], [], [], seed=4)
    assert out.model is MODEL and not out.skipped and out.accepted.size == 0


def test_repeat_gives_bit_identical_results() -> None:
    deltas, mu = honest(6, seed=1)
    target = MODEL + mu

    def evaluate(model: np.ndarray) -> float:  # scores a candidate model, as the public set does
        return -float(np.abs(model - target).sum())

    runs = [run_round(FLSettings(), MODEL, deltas, [20, 21, 22, 23, 24, 25], [0, 1, 2, 2, 1, 0], [1 / 6] * 6,
                      seed=9, evaluate=evaluate) for _ in range(3)]
    assert len({r.model.tobytes() for r in runs}) == 1 and runs[0].model.dtype == np.float32
    assert len({(r.weights.tobytes(), r.accepted.tobytes(), r.scores.tobytes(), tuple(r.reasons)) for r in runs}) == 1


def test_fedavg_moves_the_model_by_the_capped_weighted_mean_times_the_server_lr() -> None:
    deltas, _ = honest(3, seed=2)
    out = run_round(FLSettings(rule="fedavg", server_lr=0.5), MODEL, deltas, [10, 11, 12], fresh(3), [0.0] * 3, seed=0)
    # the library caps each weight at DEFAULT_WEIGHT_CAP x the median claim (11): 12 counts as 11
    w = np.minimum(np.array([10, 11, 12], dtype=np.float64), DEFAULT_WEIGHT_CAP * 11)
    expected = MODEL + np.float32(0.5) * (w @ deltas.astype(np.float64) / w.sum()).astype(np.float32)
    assert np.allclose(out.model, expected, atol=1e-6)
    assert out.weights.tolist() == [10.0, 11.0, 12.0] and out.accepted.all() and out.reasons == ["", "", ""]


def test_staleness_discounts_weights_but_not_the_step() -> None:
    deltas, _ = honest(3, seed=3)
    out = run_round(FLSettings(rule="fedavg"), MODEL, deltas, [50] * 3, [0, 2, 5], [0.0] * 3, seed=0)
    assert out.weights.tolist() == [50 * staleness_weight(s, 0.5) for s in (0, 2, 5)]
    flat = run_round(FLSettings(rule="fedavg", staleness_a=0.0), MODEL, deltas, [50] * 3, [0, 2, 5], [0.0] * 3, seed=0)
    assert flat.weights.tolist() == [50.0, 50.0, 50.0]
    # a round of equally stale updates moves the model as far as a fresh one (the product's choice)
    stale = run_round(FLSettings(rule="fedavg"), MODEL, deltas, [50] * 3, [3, 3, 3], [0.0] * 3, seed=0)
    same = run_round(FLSettings(rule="fedavg"), MODEL, deltas, [50] * 3, [0, 0, 0], [0.0] * 3, seed=0)
    assert np.array_equal(stale.model, same.model)


def test_round_weights_are_samples_times_the_decimal_discount() -> None:
    assert round_weights([8, 8], [0, 3], 0.5).tolist() == [8.0, 4.0]


def test_trust_rule_weighs_by_stake_share_and_drops_senders_without_stake() -> None:
    deltas, _ = honest(3, seed=4)
    out = run_round(FLSettings(rule="trust"), MODEL, deltas, [20, 21, 22], fresh(3), [0.5, 0.5, 0.0], seed=0)
    assert out.accepted.tolist() == [True, True, False] and out.reasons[2] == "zero trust or weight"
    assert math.isinf(out.scores[2])


def test_nobody_with_weight_leaves_the_model() -> None:
    deltas, _ = honest(2, seed=5)
    out = run_round(FLSettings(rule="trust"), MODEL, deltas, [5, 5], fresh(2), [0.0, 0.0], seed=0)
    assert out.model is MODEL and not out.skipped and out.reasons == ["zero weight"] * 2
    assert stake_changes(FLSettings(rule="trust"), out) == [-5, -5]


def test_sign_flipped_outlier_is_rejected_by_the_default_rule() -> None:
    good, mu = honest(7, seed=5)
    flipped = craft_updates("sign_flip", good[:1], good[1:], np.random.default_rng(0), scale=3.0)
    out = run_round(FLSettings(), MODEL, np.concatenate([flipped, good]), [20] * 8, fresh(8), [1 / 8] * 8, seed=1)
    assert not out.accepted[0] and out.reasons[0].startswith("clustering")
    assert out.accepted[1:].sum() >= 6 and np.dot(out.model - MODEL, mu) > 0
    assert stake_changes(FLSettings(), out)[0] == -FLSettings().penalty_rejected


def test_an_overflowing_round_is_skipped_with_its_reason() -> None:
    deltas = np.full((2, DIM), 100.0, dtype=np.float32)
    out = run_round(FLSettings(rule="fedavg", server_lr=1e37), MODEL, deltas, [20, 21], fresh(2), [0.5, 0.5], seed=0)
    assert out.model is MODEL and out.skipped == "the new model is not finite"
    assert out.reasons == ["round skipped: the new model is not finite"] * 2 and not out.accepted.any()
    assert stake_changes(FLSettings(), out) == [0, 0]  # a skipped round rewards and penalizes nobody


def test_a_rule_that_raises_skips_the_round() -> None:
    def broken(model: np.ndarray) -> float:
        return float("nan")  # the clustering rule refuses a non-finite evaluation

    out = run_round(FLSettings(), MODEL, honest(4, seed=1)[0], [20] * 4, fresh(4), [0.25] * 4, seed=0,
                    evaluate=broken)
    assert out.skipped.startswith("aggregation failed: clustering: evaluate returned a non-finite value")
    assert out.model is MODEL and np.isnan(out.scores).all()


def test_evaluate_scores_candidate_models_moved_by_the_server_lr() -> None:
    deltas, _ = honest(5, seed=6)
    seen: list[np.ndarray] = []

    def evaluate(model: np.ndarray) -> float:
        seen.append(model.copy())
        return 0.5

    out = run_round(FLSettings(server_lr=0.25), MODEL, deltas, [9] * 5, fresh(5), [0.2] * 5, seed=0, evaluate=evaluate)
    assert seen and all(m.dtype == np.float32 and m.shape == MODEL.shape for m in seen)
    # the rule scored the model the round then adopted (model + server_lr x aggregate, in float32)
    assert isinstance(out, RoundOutcome) and any(np.array_equal(m, out.model) for m in seen)


def test_the_rule_takes_its_parameters_from_the_settings() -> None:
    deltas, _ = honest(7, seed=7)
    for f in (1, 2):
        out = run_round(FLSettings(rule="multikrum", rule_params={"f": f}), MODEL, deltas, [1] * 7, fresh(7),
                        [1 / 7] * 7, seed=0)
        assert out.accepted.sum() == 7 - f  # multikrum averages the n - f most central updates
