"""FGSM evasion: the perturbation's bounds, its direction, and its effect on a trained model."""

from __future__ import annotations

import numpy as np
import pytest

from learning.data import load_digits
from learning.evasion import adversarial_accuracy, fgsm
from learning.models import Net, build_model, get_flat
from learning.train import evaluate, local_train


@pytest.fixture(scope="module")
def trained() -> tuple[Net, np.ndarray, np.ndarray]:
    """A logistic regression trained on digits (clean accuracy above 90%)."""
    train, test = load_digits(seed=0)
    model = build_model("logreg", train.input_shape, train.num_classes, seed=0)
    local_train(model, train.x, train.y, epochs=20, batch_size=32, lr=0.5, seed=0)
    return model, test.x, test.y


def test_eps_zero_is_identity_and_clean_accuracy(trained) -> None:
    model, x, y = trained
    assert np.array_equal(fgsm(model, x, y, 0.0), x)
    assert adversarial_accuracy(model, x, y, 0.0) == pytest.approx(evaluate(model, x, y)[0])


def test_perturbation_stays_in_the_ball_and_the_pixel_range(trained) -> None:
    model, x, y = trained
    adv = fgsm(model, x, y, 0.1)
    assert adv.dtype == np.float32 and adv.shape == x.shape
    assert np.abs(adv - x).max() <= 0.1 + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    moved = np.abs(adv - x)
    assert ((moved < 1e-6) | (np.abs(moved - 0.1) < 1e-6) | (adv == 0.0) | (adv == 1.0)).all()


def test_direction_matches_the_analytic_gradient_of_a_linear_model(trained) -> None:
    """For logits W x + b, d CE / d x = W^T (softmax - onehot): FGSM must follow its sign."""
    model, x, y = trained
    w, b = (p.astype(np.float64) for p in model.layers[0])
    logits = x.astype(np.float64) @ w.T + b
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    probs[np.arange(len(y)), y] -= 1.0
    expected = x + 0.05 * np.sign(probs @ w)
    adv = fgsm(model, x, y, 0.05, clip=None)
    assert np.allclose(adv, expected, atol=1e-5)


def test_fgsm_increases_the_loss_and_lowers_accuracy(trained) -> None:
    model, x, y = trained
    clean = evaluate(model, x, y)
    assert clean[0] > 0.9
    adv_loss = evaluate(model, fgsm(model, x, y, 0.1), y)[1]
    assert adv_loss > clean[1]
    accs = [adversarial_accuracy(model, x, y, eps) for eps in (0.02, 0.1, 0.3)]
    assert clean[0] > accs[0] > accs[1] > accs[2]
    assert accs[2] < 0.3


def test_leaves_the_weights_alone(trained) -> None:
    model, x, y = trained
    before = get_flat(model)
    fgsm(model, x[:50], y[:50], 0.1, batch_size=7)
    assert np.array_equal(get_flat(model), before)


def test_batching_does_not_change_the_result(trained) -> None:
    model, x, y = trained
    assert np.array_equal(fgsm(model, x, y, 0.1, batch_size=13), fgsm(model, x, y, 0.1))


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": -0.1}, "eps"),
    ({"eps": float("nan")}, "eps"),
    ({"eps": 0.1, "clip": (1.0, 0.0)}, "clip"),
    ({"eps": 0.1, "batch_size": 0}, "batch_size"),
])
def test_bad_arguments_are_rejected(trained, kwargs: dict, message: str) -> None:
    model, x, y = trained
    with pytest.raises(ValueError, match=message):
        fgsm(model, x, y, **kwargs)


def test_bad_shapes_are_rejected(trained) -> None:
    model, x, y = trained
    with pytest.raises(ValueError, match="x must be"):
        fgsm(model, x, y[:-1], 0.1)
    with pytest.raises(ValueError, match="x must be"):
        adversarial_accuracy(model, x[:0], y[:0], 0.1)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fgsm(model, bad, y, 0.1)
