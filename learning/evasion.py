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

from learning.models import Net
from learning.train import evaluate


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


def fgsm(model: Net, x: np.ndarray, y: np.ndarray, eps: float, *,
         clip: tuple[float, float] | None = (0.0, 1.0), batch_size: int = 2048) -> np.ndarray:
    """FGSM copies of ``x`` (n, F) against ``model`` for true labels ``y``, as float32.

    The gradient is taken with respect to the inputs only (:meth:`learning.models.Net.input_grad`,
    in evaluation mode, so dropout or batch statistics cannot make the perturbation random); the
    model's weights are read, never written. Coordinates whose gradient is exactly zero do not move.
    """
    xa, ya = _check(x, y, eps, clip, batch_size)
    out = xa.copy()
    if eps == 0:
        return out
    for lo in range(0, len(ya), batch_size):
        xb = xa[lo:lo + batch_size]
        moved = xb + np.float32(eps) * np.sign(model.input_grad(xb, ya[lo:lo + batch_size]))
        if clip is not None:
            np.clip(moved, clip[0], clip[1], out=moved)
        out[lo:lo + batch_size] = moved
    return out


def adversarial_accuracy(model: Net, x: np.ndarray, y: np.ndarray, eps: float, *,
                         clip: tuple[float, float] | None = (0.0, 1.0), batch_size: int = 2048) -> float:
    """Accuracy of ``model`` on the FGSM copies of ``(x, y)`` at radius ``eps`` (eps 0 = clean)."""
    xa, ya = _check(x, y, eps, clip, batch_size)
    adv = fgsm(model, xa, ya, eps, clip=clip, batch_size=batch_size)
    return evaluate(model, adv, ya, batch_size)[0]
