"""Local training on one client, evaluation, FedSGD, and the learning-rate schedule.

Training functions take a reusable model object (:class:`learning.models.Net`, numpy or torch)
and a starting flat vector, and return the *delta* (new - start) as a flat float32 vector: the
delta is what a node clips, noises, compresses and gossips, and what delegates aggregate. One loop
serves every model: the model gives the gradient, the optimizer steps its flat vector. Results
are a pure function of the inputs and ``seed`` on one machine (batch order is drawn from a numpy
generator); consensus never re-runs them. Thread counts are left to the caller: a library
function that changed them would silently slow down or oversubscribe the process embedding it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from learning.dense import cross_entropy
from learning.models import Net, get_flat, set_flat
from learning.optimizers import make_optimizer

LR_SCHEDULES = ("constant", "inv_sqrt")


@dataclass(frozen=True)
class TrainResult:
    """What one round of local work produced."""

    delta: np.ndarray     # (d,) float32, new parameters minus the starting ones
    num_samples: int      # training samples seen per epoch (the FedAvg weight)
    loss: float           # mean training loss over all steps (data term, without the prox term)
    steps: int            # optimizer steps taken


def lr_at(t: int, eta0: float, beta: float = 1.0, kind: str = "constant") -> float:
    """Learning rate for round ``t``: constant ``eta0``, or ``eta0 / sqrt(t + beta)`` (paper eq. 6).

    The decaying form is what lets asynchronous SGD converge despite stale updates; ``beta``
    keeps the first rounds from taking oversized steps.
    """
    if eta0 <= 0:
        raise ValueError(f"eta0 must be > 0, got {eta0}")
    if t < 0:
        raise ValueError(f"round must be >= 0, got {t}")
    if kind == "constant":
        return float(eta0)
    if kind == "inv_sqrt":
        if t + beta <= 0:
            raise ValueError(f"t + beta must be > 0, got {t + beta}")
        return float(eta0 / math.sqrt(t + beta))
    raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(LR_SCHEDULES)}")


def arrays(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as contiguous float32 (n, F) and ``y`` as int64 (n,) (copies only when needed)."""
    xa = np.ascontiguousarray(x, dtype=np.float32)
    ya = np.ascontiguousarray(y, dtype=np.int64)
    if xa.ndim != 2 or ya.shape != (len(xa),):
        raise ValueError(f"x must be (n, F) and y (n,), got {xa.shape} and {ya.shape}")
    if len(xa) == 0:
        raise ValueError("cannot train on an empty data set")
    return xa, ya


def local_train(model: Net, x: np.ndarray, y: np.ndarray, *, start: np.ndarray | None = None,
                epochs: int = 1, batch_size: int | None = 32, lr: float = 0.01,
                optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
                prox_mu: float = 0.0, seed: int = 0) -> TrainResult:
    """Train ``model`` on ``(x, y)`` from flat vector ``start`` (default: its current weights).

    ``batch_size=None`` means full batch. ``prox_mu > 0`` adds FedProx's proximal term
    ``mu/2 * ||w - w_start||^2``, which keeps heterogeneous clients from drifting far from the
    global model; its gradient ``mu * (w - w_start)`` is added to the model's. The model is left
    holding the trained weights.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if lr <= 0 or momentum < 0 or prox_mu < 0 or weight_decay < 0:
        raise ValueError("lr must be > 0 and momentum, prox_mu, weight_decay >= 0")
    xa, ya = arrays(x, y)
    n = len(ya)
    bs = n if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if start is not None:
        set_flat(model, start)
    w0 = get_flat(model)
    opt = make_optimizer(optimizer, model.flat, lr, momentum, weight_decay)
    rng = np.random.default_rng(seed)
    total, steps = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below, by its result
        for _ in range(epochs):
            order = rng.permutation(n) if bs < n else None
            for lo in range(0, n, bs):
                if order is None:
                    xb, yb = xa, ya
                else:
                    idx = order[lo:lo + bs]
                    xb, yb = xa[idx], ya[idx]
                loss, grad = model.loss_grad(xb, yb)
                if prox_mu > 0:
                    grad += np.float32(prox_mu) * (model.flat - w0)
                opt.step(grad)
                total += loss
                steps += 1
    delta = get_flat(model) - w0
    if not np.all(np.isfinite(delta)):
        raise FloatingPointError("training diverged (NaN or infinite weights); lower the learning rate")
    return TrainResult(delta.astype(np.float32, copy=False), n, total / steps, steps)


def fedsgd_step(model: Net, x: np.ndarray, y: np.ndarray, *, start: np.ndarray | None = None,
                lr: float = 0.1) -> TrainResult:
    """FedSGD: one full-batch gradient step, so the delta is ``-lr * grad`` on the client's data.

    It is FedAvg with one epoch, the full batch, and plain SGD (McMahan et al.'s baseline).
    """
    return local_train(model, x, y, start=start, epochs=1, batch_size=None, lr=lr, optimizer="sgd")


def evaluate(model: Net, x: np.ndarray, y: np.ndarray, batch_size: int = 4096) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``(x, y)``, in evaluation mode."""
    xa, ya = arrays(x, y)
    correct, loss_sum = 0, 0.0
    for lo in range(0, len(ya), batch_size):
        logits = model.logits(xa[lo:lo + batch_size])
        yb = ya[lo:lo + batch_size]
        loss_sum += float(cross_entropy(logits, yb)[0].sum(dtype=np.float64))
        correct += int((logits.argmax(1) == yb).sum())
    return correct / len(ya), loss_sum / len(ya)
