"""Test-time evasion: the fast gradient sign method (Goodfellow et al., 2015), for evaluation only.

An evasion attacker does not touch training at all: it perturbs the inputs it submits to a
deployed model so they are misclassified. FGSM moves every input feature by ``eps`` in the
direction that increases the model's loss, ``x' = clip(x + eps * sign(grad_x CE(f(x), y)))``: the
worst one-step perturbation inside an L-infinity ball of radius ``eps``. Robust aggregation
defends the training process and offers no protection here, which is why benchmarks report it
separately from the poisoning attacks.

Inputs use the flat ``(n, F)`` layout of :class:`learning.data.Dataset`; images are scaled to
[0, 1], so ``clip=(0.0, 1.0)`` (the default) keeps perturbed images valid. Tabular data with no
natural range takes ``clip=None``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _check(x: np.ndarray, y: np.ndarray, eps: float, clip: tuple[float, float] | None,
           batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    xa = np.ascontiguousarray(x, dtype=np.float32)
    ya = np.ascontiguousarray(y, dtype=np.int64)
    if xa.ndim != 2 or ya.shape != (xa.shape[0],) or xa.shape[0] == 0:
        raise ValueError(f"x must be (n, F) with n >= 1 and y (n,), got {xa.shape} and {ya.shape}")
    if not np.isfinite(xa).all():
        raise ValueError("x contains NaN or infinity")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    if clip is not None and not clip[0] <= clip[1]:
        raise ValueError(f"clip must be (low, high) with low <= high, got {clip}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return xa, ya


def fgsm(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float, *,
         clip: tuple[float, float] | None = (0.0, 1.0), batch_size: int = 2048) -> np.ndarray:
    """FGSM copies of ``x`` (n, F) against ``model`` for true labels ``y``, as float32.

    The gradient is taken with respect to the inputs only (``torch.autograd.grad``), so the
    model's parameter gradients are left untouched, and in evaluation mode (restored afterwards),
    so dropout or batch statistics cannot make the perturbation random. Gradients are enabled
    even when the caller is inside ``torch.no_grad()``. Coordinates whose gradient is exactly
    zero do not move.
    """
    xa, ya = _check(x, y, eps, clip, batch_size)
    out = xa.copy()
    if eps == 0:
        return out
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for lo in range(0, len(ya), batch_size):
                xb = torch.from_numpy(xa[lo:lo + batch_size].copy()).requires_grad_(True)
                loss = F.cross_entropy(model(xb), torch.from_numpy(ya[lo:lo + batch_size]), reduction="sum")
                (grad,) = torch.autograd.grad(loss, xb)
                moved = xb.detach() + eps * grad.sign()
                if clip is not None:
                    moved.clamp_(clip[0], clip[1])
                out[lo:lo + batch_size] = moved.numpy()
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    correct = 0
    for lo in range(0, len(y), batch_size):
        logits = model(torch.from_numpy(x[lo:lo + batch_size]))
        correct += int((logits.argmax(1).numpy() == y[lo:lo + batch_size]).sum())
    return correct / len(y)


def adversarial_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float, *,
                         clip: tuple[float, float] | None = (0.0, 1.0), batch_size: int = 2048) -> float:
    """Accuracy of ``model`` on the FGSM copies of ``(x, y)`` at radius ``eps`` (eps 0 = clean)."""
    xa, ya = _check(x, y, eps, clip, batch_size)
    adv = fgsm(model, xa, ya, eps, clip=clip, batch_size=batch_size)
    was_training = model.training
    model.eval()
    try:
        return _accuracy(model, adv, ya, batch_size)
    finally:
        model.train(was_training)
