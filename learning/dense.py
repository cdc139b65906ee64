"""Fully connected ReLU networks in numpy: the zoo's ``logreg``, ``mlp`` and ``tabular_mlp``.

A node needs four things of its model: the logits, the gradient of the mean cross-entropy, the sum
of per-example gradients each clipped to a norm (DP-SGD) and the gradient with respect to the
inputs (FGSM, evaluation only). For a fully connected network they are a page of matrix products.
Taken from PyTorch they cost every daemon ``import torch``: 218 MB resident, nearly all of it
private, to train the default task's 64-by-64 matrices. Torch stays for the convolutional model and
a genesis's own model code (:mod:`learning.torchnet`); both kinds of network meet the same
interface (:class:`learning.models.Net`), so one training loop serves both.

Parameters follow ``torch.nn.Linear``: per layer the weight (out, in) row-major, then the bias, all
views of one float32 vector. A flat vector therefore means the same network here and in torch
(:func:`learning.torchnet.torch_module` rebuilds it there for export; the tests check gradients
and per-example clipping against autograd and Opacus). Initialisation is torch's default for a
linear layer, U(-1/sqrt(in), 1/sqrt(in)) for weights and biases, drawn from the top 24 bits of
PCG64 words and scaled with single correctly rounded float32 operations: a pure function of the
seed, equal on every CPU and numpy version, because every node must start from the same model.

Per-example clipping needs no per-example gradient: a linear layer's gradient for one example is
the outer product of its input and its output's error, whose norm is the product of theirs
(Goodfellow 2015), so the norms cost one pass and the clipped sum is the ordinary backward pass
with every example's error scaled by its clip factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CLIP_EPS = 1e-6
"""Added to each per-example norm before dividing (Opacus' clip factor ``C / (norm + 1e-6)``)."""


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example cross-entropy of ``logits`` (n, c) for labels ``y``, and its gradient with respect
    to the logits (softmax minus one-hot), computed stably from the log-softmax."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    losses = np.log(total[:, 0]) - shifted[rows, y]
    grad = exp / total
    grad[rows, y] -= 1
    return losses, grad


class DenseNet:
    """A stack of linear layers with ReLU between them (none: logistic regression)."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, seed: int = 0) -> None:
        widths = (int(in_features), *(int(h) for h in hidden), int(num_classes))
        pairs = list(zip(widths[:-1], widths[1:]))
        self.shapes: list[tuple[int, ...]] = [s for i, o in pairs for s in ((o, i), (o,))]
        sizes = [math.prod(s) for s in self.shapes]
        bits = np.random.Generator(np.random.PCG64(seed)).bit_generator.random_raw(sum(sizes))
        unit = (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)  # exact, in [0, 1)
        bound = np.repeat(np.array([1 / math.sqrt(i) for i, _ in pairs for _ in (0, 1)], np.float32), sizes)
        self.flat = ((unit * np.float32(2) - np.float32(1)) * bound).astype(np.float32)

    @property
    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight, bias) of each layer: views of ``flat`` (made on demand, so a copy of the network
        or a new ``flat`` array cannot leave them pointing elsewhere)."""
        return self._views(self.flat)

    def _views(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight, bias) views of ``flat`` per layer, in parameter order."""
        views, offset = [], 0
        for shape in self.shapes:
            n = math.prod(shape)
            views.append(flat[offset:offset + n].reshape(shape))
            offset += n
        return list(zip(views[0::2], views[1::2]))

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Every layer's output (the input first, ReLU applied to hidden layers, logits last)."""
        outs = [np.asarray(x, dtype=np.float32)]
        layers = self.layers
        for k, (w, b) in enumerate(layers):
            z = outs[-1] @ w.T
            z += b
            if k < len(layers) - 1:
                np.maximum(z, 0, out=z)
            outs.append(z)
        return outs

    def _errors(self, outs: list[np.ndarray], top: np.ndarray) -> list[np.ndarray]:
        """Per example, the loss's gradient with respect to each layer's pre-activation, given the
        logits' (``top``). ReLU passes the error where its output is positive, as torch's does."""
        errors = [top]
        layers = self.layers
        for k in range(len(layers) - 1, 0, -1):
            e = errors[0] @ layers[k][0]
            e *= outs[k] > 0
            errors.insert(0, e)
        return errors

    def _gradient(self, outs: list[np.ndarray], errors: list[np.ndarray]) -> np.ndarray:
        """The flat gradient: per layer, errors transposed times inputs, and the errors' sum."""
        grad = np.empty_like(self.flat)
        for (gw, gb), a, e in zip(self._views(grad), outs[:-1], errors):
            np.matmul(e.T, a, out=gw)
            gb[...] = e.sum(axis=0)
        return grad

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x)[-1]

    def loss_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean cross-entropy on ``(x, y)`` and its gradient (flat)."""
        outs = self._forward(x)
        losses, top = cross_entropy(outs[-1], y)
        top /= np.float32(len(y))
        return float(losses.mean()), self._gradient(outs, self._errors(outs, top))

    def clipped_grad_sum(self, x: np.ndarray, y: np.ndarray, max_norm: float) -> tuple[float, np.ndarray]:
        """Summed cross-entropy on ``(x, y)``, and the sum of its per-example gradients, each first
        scaled to L2 norm at most ``max_norm`` (DP-SGD's clip)."""
        outs = self._forward(x)
        losses, top = cross_entropy(outs[-1], y)
        errors = self._errors(outs, top)
        sq = sum((e * e).sum(axis=1) * ((a * a).sum(axis=1) + 1) for a, e in zip(outs[:-1], errors))
        factor = np.minimum(np.float32(max_norm) / (np.sqrt(sq) + np.float32(CLIP_EPS)), np.float32(1))
        return float(losses.sum()), self._gradient(outs, [e * factor[:, None] for e in errors])

    def input_grad(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the summed cross-entropy with respect to the inputs ``x``."""
        outs = self._forward(x)
        _, top = cross_entropy(outs[-1], y)
        return self._errors(outs, top)[0] @ self.layers[0][0]
