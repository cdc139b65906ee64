"""The numpy dense networks compute what torch computes for the same network.

Every quantity a node uses (logits, the mean loss's gradient, the clipped per-example sum of
DP-SGD, the input gradient of FGSM) is compared with autograd on the equal ``torch.nn`` module
(:func:`learning.torchnet.torch_module`), and with an example-by-example reference for the clip.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from learning.data import load_digits
from learning.dense import DenseNet
from learning.models import build_model
from learning.torchnet import TorchNet, torch_module
from learning.train import local_train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    train, _ = load_digits(seed=0)
    return train.x[:48].copy(), train.y[:48].copy()


def nets(hidden: tuple[int, ...]) -> tuple[DenseNet, TorchNet]:
    dense = DenseNet(64, hidden, 10, seed=3)
    return dense, TorchNet(torch_module(dense))


@pytest.mark.parametrize("hidden", [(), (64,), (32, 16)])
def test_logits_loss_and_gradient_match_autograd(batch, hidden: tuple[int, ...]) -> None:
    x, y = batch
    dense, twin = nets(hidden)
    np.testing.assert_allclose(dense.logits(x), twin.logits(x), rtol=1e-5, atol=1e-5)
    loss, grad = dense.loss_grad(x, y)
    tloss, tgrad = twin.loss_grad(x, y)
    assert loss == pytest.approx(tloss, rel=1e-5)
    np.testing.assert_allclose(grad, tgrad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dense.input_grad(x, y), twin.input_grad(x, y), rtol=1e-4, atol=1e-6)


def clipped_reference(module: torch.nn.Module, x: np.ndarray, y: np.ndarray, max_norm: float) -> np.ndarray:
    """One example at a time: its gradient, scaled to at most ``max_norm`` as Opacus does, summed."""
    total = 0
    for xi, yi in zip(x, y):
        loss = F.cross_entropy(module(torch.from_numpy(xi[None])), torch.tensor([yi]))
        g = torch.cat([p.reshape(-1) for p in torch.autograd.grad(loss, list(module.parameters()))]).numpy()
        total = total + g * min(1.0, max_norm / (np.linalg.norm(g) + 1e-6))
    return total


@pytest.mark.parametrize("hidden", [(), (64,)])
def test_clipped_sums_match_an_example_by_example_reference(batch, hidden: tuple[int, ...]) -> None:
    x, y = batch
    dense, twin = nets(hidden)
    expected = clipped_reference(twin.module, x, y, 0.5)
    for net in (dense, twin):
        loss, got = net.clipped_grad_sum(x, y, 0.5)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        assert loss == pytest.approx(dense.loss_grad(x, y)[0] * len(y), rel=1e-5)
    unclipped = dense.clipped_grad_sum(x, y, 1e9)[1]  # nothing clipped: the plain gradient of the sum
    np.testing.assert_allclose(unclipped, dense.loss_grad(x, y)[1] * len(y), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.9), ("adam", 0.0)])
def test_local_training_follows_the_same_path_on_either(optimizer: str, momentum: float) -> None:
    """A node's local round on the numpy net and on its torch twin ends at the same weights."""
    train, _ = load_digits(seed=0)
    dense = build_model("tabular_mlp", train.input_shape, 10, seed=0)
    twin = TorchNet(torch_module(dense))
    kwargs = dict(epochs=2, batch_size=32, lr=0.05, optimizer=optimizer, momentum=momentum, prox_mu=0.1, seed=4)
    ours = local_train(dense, train.x[:300], train.y[:300], **kwargs)
    theirs = local_train(twin, train.x[:300], train.y[:300], **kwargs)
    assert ours.loss == pytest.approx(theirs.loss, rel=1e-4)
    np.testing.assert_allclose(ours.delta, theirs.delta, rtol=1e-3, atol=2e-5)
    assert np.abs(ours.delta).max() > 1e-2
