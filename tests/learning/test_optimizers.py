"""The local optimizers take torch.optim's steps on a model's flat vector."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from learning.models import build_model
from learning.optimizers import make_optimizer
from learning.torchnet import torch_module

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name,momentum,weight_decay,reference", [
    ("sgd", 0.0, 0.0, lambda ps, lr: torch.optim.SGD(ps, lr=lr)),
    ("sgd", 0.9, 1e-3, lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=1e-3)),
    ("adam", 0.0, 0.0, lambda ps, lr: torch.optim.Adam(ps, lr=lr)),
    ("adam", 0.0, 1e-2, lambda ps, lr: torch.optim.Adam(ps, lr=lr, weight_decay=1e-2)),
])
def test_steps_match_torch_optim(name: str, momentum: float, weight_decay: float, reference: Callable) -> None:
    """Twelve steps of ours (numpy gradients, flat vector) and of torch.optim (autograd) from the
    same weights on the same batches end at the same weights, to float32 rounding."""
    rng = np.random.default_rng(0)
    model = build_model("tabular_mlp", (8,), 3, seed=0)
    twin = torch_module(model)
    opt = make_optimizer(name, model.flat, 0.05, momentum, weight_decay)
    theirs = reference(list(twin.parameters()), 0.05)
    start = model.flat.copy()
    for _ in range(12):
        x, y = rng.standard_normal((10, 8)).astype(np.float32), rng.integers(0, 3, 10)
        opt.step(model.loss_grad(x, y)[1])
        theirs.zero_grad()
        F.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        theirs.step()
    flat = torch.cat([p.detach().reshape(-1) for p in twin.parameters()]).numpy()
    np.testing.assert_allclose(model.flat, flat, rtol=1e-5, atol=1e-6)
    assert np.abs(model.flat - start).max() > 1e-2  # the weights moved


def test_unknown_optimizer_is_named() -> None:
    with pytest.raises(ValueError, match="rmsprop"):
        make_optimizer("rmsprop", np.zeros(2, np.float32), 0.1, 0.0, 0.0)
