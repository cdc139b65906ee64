"""DP-SGD local training: the ``local-dp`` preset's mechanism (Abadi et al. 2016), on Opacus.

Each step Poisson-samples the device's own records (each record independently, with rate
``q = 1 / ceil(n / batch_size)``, as Opacus' ``DPDataLoader`` does, so an epoch is ``1/q`` steps
of ``batch_size`` records on average), clips every example's gradient to ``max_grad_norm``, sums
them, adds N(0, (s * max_grad_norm)^2) noise and divides by the expected batch size. Per-example
gradients and the clip-noise-scale step are Opacus' own (``GradSampleModule``,
``DPOptimizer``); the sampling is ours because a device trains on arrays, not a ``DataLoader``.
The steps a release takes (:func:`dp_schedule`) are what the node's accountant composes.

The sampling and the noise come from the caller's generator: a daemon passes one seeded from OS
entropy (what the device sampled must stay secret: subsampling amplifies privacy only if nobody
knows which records took part), a simulation a seeded one. Consensus never re-runs local
training, so none of this needs to be reproducible across machines. Opacus' ``secure_mode``
(noise robust to floating-point attacks) needs ``torchcsprng``, which is not used.

Opacus is imported here, not at module load: a node of the ``off`` preset never loads it (about
90 MB of resident memory; see :mod:`learning.privacy`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from learning.models import get_flat, set_flat
from learning.optimizers import OPTIMIZERS
from learning.train import TrainResult, tensors


def torch_optimizer(name: str, params: list[nn.Parameter], lr: float, momentum: float) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer that Opacus' ``DPOptimizer`` wraps (it steps the wrapped
    optimizer's parameter groups, so :mod:`learning.optimizers` cannot stand in for it)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def dp_schedule(n: int, batch_size: int | None, epochs: int) -> tuple[float, int]:
    """``(q, steps)`` of one release on ``n`` records: the Poisson rate and the DP-SGD step count
    (``epochs`` passes of ``1/q`` steps; ``batch_size=None`` means every record every step)."""
    if n < 1 or epochs < 1:
        raise ValueError(f"need records and epochs >= 1, got {n} and {epochs}")
    per_epoch = 1 if batch_size is None else math.ceil(n / batch_size)
    return 1.0 / per_epoch, per_epoch * epochs


def dp_local_train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, start: np.ndarray, epochs: int,
                   batch_size: int | None, lr: float, noise_multiplier: float, max_grad_norm: float,
                   rng: np.random.Generator, optimizer: str = "sgd", momentum: float = 0.0,
                   prox_mu: float = 0.0) -> TrainResult:
    """Train ``model`` from ``start`` with DP-SGD on ``(x, y)``; the model keeps the new weights.

    Same contract as :func:`learning.train.local_train` (the delta, records per epoch, mean loss
    over the non-empty batches, steps). FedProx's proximal gradient depends on no record, so it is
    added after the noise (an Opacus step hook).
    """
    # imported here, not at module load: see the module docstring
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer

    xt, yt = tensors(x, y)
    n = len(yt)
    q, steps = dp_schedule(n, batch_size, epochs)
    set_flat(model, start)
    w0 = get_flat(model)
    wrapped = GradSampleModule(model, loss_reduction="sum")
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        opt = DPOptimizer(torch_optimizer(optimizer, params, lr, momentum), noise_multiplier=noise_multiplier,
                          max_grad_norm=max_grad_norm, expected_batch_size=n * q, loss_reduction="mean",
                          generator=torch.Generator().manual_seed(int(rng.integers(2 ** 63))))
        if prox_mu > 0:
            anchors = [p.detach().clone() for p in params]

            def proximal(_: DPOptimizer) -> None:
                for p, a in zip(params, anchors):
                    p.grad.add_(p.detach() - a, alpha=prox_mu)
            opt.attach_step_hook(proximal)
        wrapped.train()
        total, counted = 0.0, 0
        with warnings.catch_warnings():
            # the inputs need no gradient, and torch says so on every backward through the hooks
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for _ in range(steps):
                idx = torch.from_numpy(np.flatnonzero(rng.random(n) < q))
                opt.zero_grad()
                loss = F.cross_entropy(wrapped(xt[idx]), yt[idx], reduction="sum")
                loss.backward()
                opt.step()  # an empty batch is a step too: noise only, as the accountant counts it
                if len(idx):
                    total += float(loss.detach()) / len(idx)
                    counted += 1
        opt.zero_grad()
    finally:
        wrapped.remove_hooks()  # the caller's model is reused (the simulator shares one)
        wrapped.del_grad_sample()
    delta = get_flat(model) - w0
    if not np.all(np.isfinite(delta)):
        raise FloatingPointError("training diverged (NaN or infinite weights); lower the learning rate")
    return TrainResult(delta.astype(np.float32, copy=False), n, total / counted if counted else float("nan"), steps)
