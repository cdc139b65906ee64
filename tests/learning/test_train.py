"""Local training: reduces loss, deterministic, FedProx, FedSGD, schedule, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learning.data import load_digits
from learning.models import build_model, get_flat, set_flat
from learning.torchnet import torch_module
from learning.train import evaluate, fedsgd_step, local_train, lr_at


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


@pytest.mark.parametrize("name,optimizer,lr", [("logreg", "sgd", 0.5), ("tabular_mlp", "adam", 0.01),
                                               ("cnn", "sgd", 0.1)])
def test_training_reduces_loss_on_digits(digits, name: str, optimizer: str, lr: float) -> None:
    train, test = digits
    model = build_model(name, train.input_shape, 10, seed=0)
    start = get_flat(model)
    acc0, loss0 = evaluate(model, test.x, test.y)
    res = local_train(model, train.x, train.y, start=start, epochs=3, batch_size=32, lr=lr,
                      optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else 0.0, seed=1)
    acc1, loss1 = evaluate(model, test.x, test.y)
    assert loss1 < 0.5 * loss0 and acc1 > 0.8 > acc0
    assert res.delta.dtype == np.float32
    np.testing.assert_allclose(get_flat(model), start + res.delta, rtol=0, atol=1e-6)
    assert res.num_samples == len(train) and res.steps == 3 * math.ceil(len(train) / 32)


def test_deterministic_given_seed(digits) -> None:
    train, _ = digits
    model = build_model("tabular_mlp", train.input_shape, 10, seed=0)
    start = get_flat(model)
    a = local_train(model, train.x, train.y, start=start, epochs=1, lr=0.1, momentum=0.5, seed=3)
    b = local_train(model, train.x, train.y, start=start, epochs=1, lr=0.1, momentum=0.5, seed=3)
    c = local_train(model, train.x, train.y, start=start, epochs=1, lr=0.1, momentum=0.5, seed=4)
    assert np.array_equal(a.delta, b.delta) and a.loss == b.loss
    assert not np.array_equal(a.delta, c.delta)


def test_prox_term_keeps_update_closer(digits) -> None:
    train, _ = digits
    model = build_model("logreg", train.input_shape, 10, seed=0)
    start = get_flat(model)
    free = local_train(model, train.x, train.y, start=start, epochs=2, lr=0.2, seed=0)
    prox = local_train(model, train.x, train.y, start=start, epochs=2, lr=0.2, prox_mu=1.0, seed=0)
    assert np.linalg.norm(prox.delta) < 0.8 * np.linalg.norm(free.delta)


def test_fedsgd_is_one_full_batch_gradient_step(digits) -> None:
    train, _ = digits
    x, y = train.x[:100], train.y[:100]
    model = build_model("logreg", train.input_shape, 10, seed=0)
    start = get_flat(model)
    res = fedsgd_step(model, x, y, start=start, lr=0.3)
    set_flat(model, start)
    twin = torch_module(model)
    loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    grad = np.concatenate([p.grad.reshape(-1).numpy() for p in twin.parameters()])
    assert res.steps == 1 and res.num_samples == 100
    np.testing.assert_allclose(res.delta, -0.3 * grad, rtol=1e-5, atol=1e-7)


def test_divergence_and_bad_arguments(digits) -> None:
    train, _ = digits
    model = build_model("logreg", train.input_shape, 10, seed=0)
    with pytest.raises(FloatingPointError, match="diverged"):
        local_train(model, train.x * 1e30, train.y, epochs=1, lr=1e30)
    for kwargs in ({"epochs": 0}, {"lr": 0.0}, {"batch_size": 0}, {"optimizer": "lbfgs"}, {"prox_mu": -1.0}):
        with pytest.raises(ValueError):
            local_train(model, train.x, train.y, **kwargs)
    with pytest.raises(ValueError, match="empty"):
        local_train(model, train.x[:0], train.y[:0])


def test_lr_schedule() -> None:
    assert lr_at(0, 0.1) == lr_at(100, 0.1) == 0.1
    assert lr_at(0, 1.0, beta=4.0, kind="inv_sqrt") == 0.5
    assert lr_at(12, 1.0, beta=4.0, kind="inv_sqrt") == 0.25
    with pytest.raises(ValueError):
        lr_at(0, 1.0, beta=0.0, kind="inv_sqrt")
    with pytest.raises(ValueError):
        lr_at(0, 1.0, kind="cosine")


def test_evaluate_matches_manual_accuracy(digits) -> None:
    _, test = digits
    model = build_model("logreg", test.input_shape, 10, seed=0)
    acc, loss = evaluate(model, test.x, test.y, batch_size=50)
    with torch.no_grad():
        logits = torch_module(model)(torch.from_numpy(test.x))
    assert acc == pytest.approx(float((logits.argmax(1).numpy() == test.y).mean()))
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(test.y))), rel=1e-5)
