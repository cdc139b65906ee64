"""DP-SGD local training: the ``local-dp`` preset's mechanism (Abadi et al. 2016), accounted by Opacus.

Each step Poisson-samples the device's own records (each record independently, with rate
``q = 1 / ceil(n / batch_size)``, as Opacus' ``DPDataLoader`` does, so an epoch is ``1/q`` steps
of ``batch_size`` records on average), clips every example's gradient to ``max_grad_norm``, sums
them, adds N(0, (s * max_grad_norm)^2) noise and divides by the expected batch size: the step of
Opacus' ``DPOptimizer`` (clip factor ``C / (norm + 1e-6)`` at most 1; an empty batch is a step of
noise alone, as the accountant counts it). The model computes the clipped sum
(:meth:`learning.models.Net.clipped_grad_sum`: numpy for dense models, ``torch.func`` for torch
ones); the steps a release takes (:func:`dp_schedule`) are what the node's accountant composes
(:mod:`learning.privacy`, Opacus' RDP analysis).

The sampling and the noise come from the caller's generator: a daemon passes one seeded from OS
entropy (what the device sampled must stay secret: subsampling amplifies privacy only if nobody
knows which records took part), a simulation a seeded one. Consensus never re-runs local
training, so none of this needs to be reproducible across machines. Noise robust to
floating-point attacks (Opacus' ``secure_mode``) is not provided.
"""

from __future__ import annotations

import math

import numpy as np

from learning.models import Net, get_flat, set_flat
from learning.optimizers import make_optimizer
from learning.train import TrainResult, arrays


def dp_schedule(n: int, batch_size: int | None, epochs: int) -> tuple[float, int]:
    """``(q, steps)`` of one release on ``n`` records: the Poisson rate and the DP-SGD step count
    (``epochs`` passes of ``1/q`` steps; ``batch_size=None`` means every record every step)."""
    if n < 1 or epochs < 1:
        raise ValueError(f"need records and epochs >= 1, got {n} and {epochs}")
    per_epoch = 1 if batch_size is None else math.ceil(n / batch_size)
    return 1.0 / per_epoch, per_epoch * epochs


def dp_local_train(model: Net, x: np.ndarray, y: np.ndarray, *, start: np.ndarray, epochs: int,
                   batch_size: int | None, lr: float, noise_multiplier: float, max_grad_norm: float,
                   rng: np.random.Generator, optimizer: str = "sgd", momentum: float = 0.0,
                   prox_mu: float = 0.0) -> TrainResult:
    """Train ``model`` from ``start`` with DP-SGD on ``(x, y)``; the model keeps the new weights.

    Same contract as :func:`learning.train.local_train` (the delta, records per epoch, mean loss
    over the non-empty batches, steps). FedProx's proximal gradient depends on no record, so it is
    added after the noise.
    """
    xa, ya = arrays(x, y)
    n = len(ya)
    q, steps = dp_schedule(n, batch_size, epochs)
    set_flat(model, start)
    w0 = get_flat(model)
    opt = make_optimizer(optimizer, model.flat, lr, momentum, 0.0)
    sigma, scale = noise_multiplier * max_grad_norm, np.float32(1 / (n * q))
    total, counted = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below, by its result
        for _ in range(steps):
            idx = np.flatnonzero(rng.random(n) < q)
            if len(idx):
                loss, grad = model.clipped_grad_sum(xa[idx], ya[idx], max_grad_norm)
                total += loss / len(idx)
                counted += 1
            else:
                grad = np.zeros_like(model.flat)
            grad += rng.normal(0.0, sigma, grad.size).astype(np.float32)
            grad *= scale
            if prox_mu > 0:
                grad += np.float32(prox_mu) * (model.flat - w0)
            opt.step(grad)
    delta = get_flat(model) - w0
    if not np.all(np.isfinite(delta)):
        raise FloatingPointError("training diverged (NaN or infinite weights); lower the learning rate")
    return TrainResult(delta.astype(np.float32, copy=False), n, total / counted if counted else float("nan"), steps)
