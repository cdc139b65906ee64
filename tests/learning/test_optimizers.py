"""The hand-written local optimizers take torch.optim's steps, bit for bit."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch.nn import functional as F

from learning.optimizers import SGD, make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def _trajectory(optimizer: SGD | torch.optim.Optimizer, model: torch.nn.Module, batches: Batches) -> list[torch.Tensor]:
    """Every parameter after each step of ``optimizer`` over ``batches``."""
    seen = []
    for x, y in batches:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        seen += [p.detach().clone() for p in model.parameters()]
    return seen


@pytest.mark.parametrize("name,momentum,weight_decay,reference", [
    ("sgd", 0.0, 0.0, lambda ps, lr: torch.optim.SGD(ps, lr=lr)),
    ("sgd", 0.9, 1e-3, lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=1e-3)),
    ("adam", 0.0, 0.0, lambda ps, lr: torch.optim.Adam(ps, lr=lr)),
    ("adam", 0.0, 1e-2, lambda ps, lr: torch.optim.Adam(ps, lr=lr, weight_decay=1e-2)),
])
def test_steps_match_torch_optim(name: str, momentum: float, weight_decay: float, reference: Callable) -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    twin = copy.deepcopy(model)
    batches = [(torch.randn(10, 8, generator=gen), torch.randint(0, 3, (10,), generator=gen)) for _ in range(12)]
    ours = _trajectory(make_optimizer(name, list(model.parameters()), 0.05, momentum, weight_decay), model, batches)
    theirs = _trajectory(reference(list(twin.parameters()), 0.05), twin, batches)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert not torch.equal(ours[0], ours[-4])  # the weights moved


def test_zero_grad_drops_the_gradients() -> None:
    layer = torch.nn.Linear(2, 2)
    layer(torch.ones(1, 2)).sum().backward()
    opt = make_optimizer("sgd", list(layer.parameters()), 0.1, 0.0, 0.0)
    opt.zero_grad()
    assert all(p.grad is None for p in layer.parameters())


def test_unknown_optimizer_is_named() -> None:
    with pytest.raises(ValueError, match="rmsprop"):
        make_optimizer("rmsprop", [], 0.1, 0.0, 0.0)
