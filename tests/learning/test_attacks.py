"""Attacks (evaluation only): shapes, the behaviour each paper defines, and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from learning.attacks import (
    DATA_ATTACKS,
    MODEL_ATTACKS,
    add_trigger,
    alie_z,
    backdoor_success_rate,
    claimed_samples,
    craft_updates,
    poison_data,
)


def _setup(b: int = 4, h: int = 12, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=d)
    honest = (mu + 0.3 * rng.normal(size=(b + h, d))).astype(np.float32)
    return honest[:b], honest[b:]


@pytest.mark.parametrize("name", MODEL_ATTACKS)
def test_model_attacks_shape_dtype_and_determinism(name: str) -> None:
    benign, observed = _setup()
    a = craft_updates(name, benign, observed, np.random.default_rng(1))
    b = craft_updates(name, benign, observed, np.random.default_rng(1))
    assert a.shape == benign.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert a.tobytes() == b.tobytes()
    assert a.flags.writeable and a.flags.c_contiguous


def test_sign_flip_flips() -> None:
    benign, observed = _setup()
    np.testing.assert_array_equal(craft_updates("sign_flip", benign, observed, np.random.default_rng()), -benign)
    np.testing.assert_allclose(craft_updates("sign_flip", benign, observed, np.random.default_rng(), scale=4.0),
                               -4.0 * benign, rtol=1e-6)


def test_gaussian_is_large_noise_unrelated_to_the_update() -> None:
    benign, observed = _setup(b=50, d=2000)
    out = craft_updates("gaussian", benign, observed, np.random.default_rng(2))
    rms = np.sqrt(np.mean(np.concatenate([observed, benign]).astype(np.float64) ** 2))
    assert abs(out.std() / (10 * rms) - 1) < 0.05 and abs(out.mean()) < 0.05 * out.std()
    out = craft_updates("gaussian", benign, observed, np.random.default_rng(2), sigma=0.5)
    assert abs(out.std() - 0.5) < 0.01


def test_alie_uses_the_paper_z() -> None:
    # n=50, f=12: s = floor(26) - 12 = 14, z = Phi^-1(36/50) ~ 0.583
    assert abs(alie_z(50, 12) - 0.5828) < 1e-3
    assert alie_z(10, 8) > 0          # s clamped to 1: z = Phi^-1(0.9)
    benign, observed = _setup()
    known = np.concatenate([observed, benign]).astype(np.float64)
    out = craft_updates("alie", benign, observed, np.random.default_rng(), n=50, f=12)
    expected = known.mean(axis=0) - alie_z(50, 12) * known.std(axis=0)
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        alie_z(5, 5)


def test_ipm_points_against_the_mean() -> None:
    benign, observed = _setup()
    out = craft_updates("ipm", benign, observed, np.random.default_rng(), eps=0.5)
    mean = np.concatenate([observed, benign]).mean(axis=0)
    np.testing.assert_allclose(out[0], -0.5 * mean, rtol=1e-5, atol=1e-6)
    assert float(out[0] @ mean) < 0


@pytest.mark.parametrize("direction", ["std", "unit", "sign"])
def test_minmax_stays_within_the_honest_max_distance(direction: str) -> None:
    benign, observed = _setup(b=3, h=15, d=40, seed=3)
    known = np.concatenate([observed, benign]).astype(np.float64)
    out = craft_updates("minmax", benign, observed, np.random.default_rng(), direction=direction)
    pairwise = np.linalg.norm(known[:, None] - known[None, :], axis=2).max()
    reach = np.linalg.norm(known - out[0].astype(np.float64), axis=1).max()
    assert reach <= pairwise * (1 + 1e-5)
    assert reach >= pairwise * 0.99           # gamma is maximal: the bound is (nearly) attained
    assert np.linalg.norm(out[0] - known.mean(axis=0)) > 0.1


@pytest.mark.parametrize("name", ["alie", "ipm", "minmax"])
def test_jitter_turns_near_copies_into_distinct_honest_looking_updates(name: str) -> None:
    benign, observed = _setup(b=6, h=30, d=4000, seed=4)
    known = np.concatenate([observed, benign]).astype(np.float64)
    copies = craft_updates(name, benign, observed, np.random.default_rng(5))
    spread = craft_updates(name, benign, observed, np.random.default_rng(5), jitter=1.0)
    assert np.ptp(copies, axis=0).max() == 0                       # one vector, sent six times
    pair = np.linalg.norm(spread[0] - spread[1])
    honest_pair = np.linalg.norm(known[0] - known[1])
    assert 0.8 * honest_pair < pair < 1.6 * honest_pair           # as far apart as honest clients
    np.testing.assert_allclose(spread.mean(axis=0), copies[0], atol=4 * known.std(axis=0).max() / np.sqrt(6))
    with pytest.raises(ValueError, match="jitter"):
        craft_updates(name, benign, observed, np.random.default_rng(), jitter=-1.0)
    flipped = craft_updates("sign_flip", benign, observed, np.random.default_rng(), jitter=1.0)
    assert (flipped != -benign).any()                              # every model attack takes jitter


def test_claimed_samples_lie_only_for_the_attackers() -> None:
    counts = np.array([10, 20, 30, 40])
    byz = np.array([False, True, False, True])
    assert claimed_samples(counts, byz, 1e9).tolist() == [10, 1e9, 30, 1e9]
    assert claimed_samples(counts, byz, None).tolist() == [10, 20, 30, 40]
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="claimed"):
            claimed_samples(counts, byz, bad)
    with pytest.raises(ValueError, match="shape"):
        claimed_samples(counts, byz[:3], 1e9)


def test_scale_boosts_by_participants_by_default() -> None:
    benign, observed = _setup(b=2, h=8)
    np.testing.assert_allclose(craft_updates("scale", benign, observed, np.random.default_rng()), 10 * benign,
                               rtol=1e-6)
    np.testing.assert_allclose(craft_updates("scale", benign, observed, np.random.default_rng(), boost=3.0),
                               3 * benign, rtol=1e-6)


def test_model_attack_errors() -> None:
    benign, observed = _setup()
    with pytest.raises(ValueError, match="unknown model attack"):
        craft_updates("nope", benign, observed, np.random.default_rng())
    with pytest.raises(ValueError, match="observed"):
        craft_updates("ipm", benign, observed[:, :3], np.random.default_rng())
    with pytest.raises(ValueError, match="sign_flip"):
        craft_updates("sign_flip", benign, observed, np.random.default_rng(), bogus=1)
    out = craft_updates("ipm", benign, np.empty((0, 64), np.float32), np.random.default_rng())
    np.testing.assert_allclose(out[0], -0.5 * benign.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_label_flip() -> None:
    x = np.zeros((6, 4), np.float32)
    y = np.array([0, 1, 2, 3, 4, 9])
    _, y2 = poison_data("label_flip", x, y, np.random.default_rng(), num_classes=10)
    assert y2.tolist() == [9, 8, 7, 6, 5, 0] and y.tolist() == [0, 1, 2, 3, 4, 9]
    _, y3 = poison_data("label_flip", x, y, np.random.default_rng(), 10, mapping={1: 7})
    assert y3.tolist() == [0, 7, 2, 3, 4, 9]
    _, y4 = poison_data("label_flip", x, y, np.random.default_rng(0), 10, fraction=0.5)
    assert (y4 != y).sum() == 3
    with pytest.raises(ValueError, match="mapping"):
        poison_data("label_flip", x, y, np.random.default_rng(), 10, mapping={1: 12})


def test_backdoor_stamps_trigger_and_relabels_a_fraction() -> None:
    shape = (1, 8, 8)
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 0.5, size=(100, 64)).astype(np.float32)
    y = rng.integers(0, 10, 100)
    x2, y2 = poison_data("backdoor", x, y, np.random.default_rng(5), 10, shape, target_label=3, fraction=0.2)
    changed = np.flatnonzero((x2 != x).any(axis=1))
    assert changed.size == 20 and (y2[changed] == 3).all()
    unchanged = np.setdiff1d(np.arange(100), changed)
    assert np.array_equal(y2[unchanged], y[unchanged])
    img = x2[changed[0]].reshape(8, 8)
    np.testing.assert_array_equal(img[5:, 5:], [[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    np.testing.assert_array_equal(img[:5], x[changed[0]].reshape(8, 8)[:5])


def test_the_trigger_can_sit_in_the_centre_of_the_image_or_of_the_features() -> None:
    x = np.full((2, 64), 0.5, np.float32)
    img = add_trigger(x, (1, 8, 8), at="centre")[0].reshape(8, 8)
    np.testing.assert_array_equal(img[2:5, 2:5], [[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    assert (np.delete(img.ravel(), [r * 8 + c for r in range(2, 5) for c in range(2, 5)]) == 0.5).all()
    np.testing.assert_array_equal(add_trigger(x[:, :7], None, size=3, at="centre")[0], [.5, .5, 1, 0, 1, .5, .5])
    with pytest.raises(ValueError, match="trigger place"):
        add_trigger(x, (1, 8, 8), at="middle")


def test_add_trigger_tabular_and_errors() -> None:
    x = np.full((2, 6), 0.5, np.float32)
    out = add_trigger(x, None, size=4)
    np.testing.assert_array_equal(out[:, 2:], [[1, 0, 1, 0]] * 2)
    assert (x == 0.5).all()
    with pytest.raises(ValueError):
        add_trigger(x, (1, 2, 2))
    with pytest.raises(ValueError):
        poison_data("backdoor", x, np.zeros(2, np.int64), np.random.default_rng(), 2, None, target_label=5)
    with pytest.raises(ValueError, match="unknown data attack"):
        poison_data("nope", x, np.zeros(2, np.int64), np.random.default_rng(), 2)
    assert DATA_ATTACKS == ("label_flip", "backdoor", "dba")


def test_backdoor_success_rate() -> None:
    shape = (1, 6, 6)
    x = np.zeros((10, 36), np.float32)
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])

    def triggered_to_zero(batch: np.ndarray) -> np.ndarray:   # a model that learnt the backdoor
        return np.where(batch.reshape(-1, 6, 6)[:, 5, 5] == 1.0, 0, 1)

    assert backdoor_success_rate(triggered_to_zero, x, y, target_label=0, image_shape=shape) == 1.0
    assert backdoor_success_rate(lambda b: np.ones(len(b), int), x, y, 0, shape) == 0.0
    with pytest.raises(ValueError, match="target label"):
        backdoor_success_rate(triggered_to_zero, x, np.zeros(10, int), 0, shape)
