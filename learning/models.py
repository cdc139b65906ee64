"""Model zoo and the flat-vector view of a model's parameters.

Every update in fedchain is one flat ``float32`` vector of all parameters, so the two hot
operations are "model -> vector" and "vector -> model". Models built here keep all their
parameters as views into one contiguous buffer: reading the vector is one memcpy and loading
a vector is one ``copy_``, with no per-parameter Python work. That matters in the simulator,
where one model object is reused for hundreds of virtual clients per round.

All models take *flat* inputs ``(n, F)`` (the layout of :class:`learning.data.Dataset`); image
models reshape internally to ``(n, C, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

MODEL_NAMES = ("logreg", "mlp", "tabular_mlp", "cnn")
"""``mlp`` is the FedAvg paper's 2NN (in-200-200-classes); ``tabular_mlp`` a small 64-unit MLP."""


class Flatten2NN(nn.Module):
    """Fully connected network with ReLU hidden layers (FedAvg's "2NN" for ``hidden=(200, 200)``)."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 conv layers (each followed by 2x2 max-pooling) and two fully connected layers.

    Padding keeps the spatial size before each pool, so the same architecture serves 28x28
    (Fashion-MNIST: 7x7 after pooling), 32x32 (CIFAR-10: 8x8) and 8x8 (digits: 2x2) inputs.
    Channel widths are modest (16, 32) because clients train on two CPU cores.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int,
                 channels: tuple[int, int] = (16, 32), hidden: int = 128) -> None:
        super().__init__()
        c, h, w = image_shape
        if h < 4 or w < 4:
            raise ValueError(f"image {h}x{w} is too small for two 2x2 poolings")
        self.image_shape = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, channels[0], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = channels[1] * (h // 4) * (w // 4)
        self.classifier = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], *self.image_shape)
        return self.classifier(self.features(x).flatten(1))


def build_model(name: str, input_shape: Sequence[int], num_classes: int, seed: int = 0) -> nn.Module:
    """Build model ``name`` for inputs of ``input_shape`` ((F,) tabular, (C, H, W) images).

    Initialisation is a pure function of ``seed``: the global torch RNG is forked, so building a
    model neither depends on nor disturbs the caller's random state. Every node must start from
    the same genesis model, which this guarantees across processes and machines.
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"invalid input shape {input_shape!r}")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    features = math.prod(shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "logreg":
            model: nn.Module = Flatten2NN(features, (), num_classes)
        elif name == "mlp":
            model = Flatten2NN(features, (200, 200), num_classes)
        elif name == "tabular_mlp":
            model = Flatten2NN(features, (64,), num_classes)
        elif name == "cnn":
            if len(shape) != 3:
                raise ValueError(f"cnn needs an image input shape (C, H, W), got {shape}")
            model = SmallCNN((shape[0], shape[1], shape[2]), num_classes)
        else:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    _flat_buffer(model)
    return model


def num_params(model: nn.Module) -> int:
    """Number of trainable scalars, i.e. the length of the model's flat vector."""
    return sum(p.numel() for p in model.parameters())


def _flat_buffer(model: nn.Module) -> torch.Tensor:
    """The contiguous float32 buffer backing all of ``model``'s parameters, created on first use.

    Parameters are re-pointed to views of the buffer; the check below notices if something
    (e.g. ``load_state_dict(assign=True)``) replaced a parameter's storage, and rebuilds.
    """
    params = list(model.parameters())
    buf: torch.Tensor | None = getattr(model, "_fedchain_flat", None)
    if buf is not None and _backs(buf, params):
        return buf
    if any(p.dtype != torch.float32 for p in params):
        raise TypeError("flat vectors need float32 parameters")
    with torch.no_grad():
        buf = torch.cat([p.detach().reshape(-1) for p in params]) if params else torch.zeros(0)
        offset = 0
        for p in params:
            n = p.numel()
            p.data = buf[offset:offset + n].view_as(p)
            offset += n
    object.__setattr__(model, "_fedchain_flat", buf)
    return buf


def _backs(buf: torch.Tensor, params: list[nn.Parameter]) -> bool:
    """True when ``params`` are, in order, consecutive views into ``buf``."""
    base = buf.data_ptr()
    offset = 0
    for p in params:
        if p.data_ptr() != base + 4 * offset:
            return False
        offset += p.numel()
    return offset == buf.numel()


def feature_groups(model: nn.Module) -> np.ndarray:
    """The feature group of every entry of the model's flat vector (:func:`get_flat` order), int64.

    A weight tensor (out, in, ...) has one group per input: a column of a linear layer's matrix
    (the weights leaving one input pixel or hidden unit), an input channel of a convolution. A
    bias is one group. The aggregation's feature clip (:mod:`learning.aggregation.clustering`)
    compares updates group by group: a backdoor's trigger is an input that honest data rarely
    shows, so its push lands on the groups of that input.
    """
    ids: list[np.ndarray] = []
    count = 0
    for p in model.parameters():
        if p.ndim >= 2:
            column = np.arange(p.shape[1]).reshape(1, -1, *([1] * (p.ndim - 2)))
            ids.append(count + np.broadcast_to(column, tuple(p.shape)).ravel())
            count += p.shape[1]
        else:
            ids.append(np.full(p.numel(), count))
            count += 1
    return np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)


def get_flat(model: nn.Module) -> np.ndarray:
    """A fresh float32 copy of all parameters, in ``model.parameters()`` order."""
    return _flat_buffer(model).detach().numpy().copy()


def set_flat(model: nn.Module, vec: np.ndarray) -> None:
    """Load flat vector ``vec`` into ``model`` in place (one copy, no reallocation)."""
    buf = _flat_buffer(model)
    arr = np.asarray(vec)
    if arr.shape != (buf.numel(),):
        raise ValueError(f"flat vector has shape {arr.shape}, model needs ({buf.numel()},)")
    if not np.all(np.isfinite(arr)):
        raise ValueError("flat vector contains NaN or infinity")
    with torch.no_grad():
        # require a writable array: vectors decoded from the wire are read-only views of the bytes
        buf.copy_(torch.from_numpy(np.require(arr, dtype=np.float32, requirements=["C", "W"])))
