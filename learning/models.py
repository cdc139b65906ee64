"""Model zoo, the interface every model meets, and the flat-vector view of its parameters.

Every update in fedchain is one flat ``float32`` vector of all parameters. A model (:class:`Net`)
keeps its parameters as views into one contiguous vector, ``flat``: reading the vector is one
memcpy and loading one is one copy, with no per-parameter Python work. That matters in the
simulator, where one model object is reused for hundreds of virtual clients per round.

The dense models (``logreg``, ``mlp``, ``tabular_mlp``) are numpy (:mod:`learning.dense`); the
``cnn`` and a genesis's own model code are PyTorch (:mod:`learning.torchnet`, imported only for
them). All models take *flat* inputs ``(n, F)`` (the layout of :class:`learning.data.Dataset`);
image models reshape internally to ``(n, C, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from learning.dense import DenseNet

MODEL_NAMES = ("logreg", "mlp", "tabular_mlp", "cnn")
"""``mlp`` is the FedAvg paper's 2NN (in-200-200-classes); ``tabular_mlp`` a small 64-unit MLP."""
HIDDEN = {"logreg": (), "mlp": (200, 200), "tabular_mlp": (64,)}


class Net(Protocol):
    """What training, evaluation and attacks use of a model (inputs float32 ``(n, F)``, labels int64)."""

    flat: np.ndarray
    """All parameters, float32, writable: the model's weights themselves, not a copy."""
    shapes: list[tuple[int, ...]]
    """Each parameter's shape, in ``flat`` order (a weight's first two axes are (out, in))."""

    def logits(self, x: np.ndarray) -> np.ndarray: ...

    def loss_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean cross-entropy and its flat gradient."""

    def clipped_grad_sum(self, x: np.ndarray, y: np.ndarray, max_norm: float) -> tuple[float, np.ndarray]:
        """Summed cross-entropy and the sum of per-example gradients, each clipped to ``max_norm``."""

    def input_grad(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the summed cross-entropy with respect to ``x``."""


def build_model(name: str, input_shape: Sequence[int], num_classes: int, seed: int = 0) -> Net:
    """Build model ``name`` for inputs of ``input_shape`` ((F,) tabular, (C, H, W) images).

    Initialisation is a pure function of ``seed`` and leaves the caller's random state alone:
    every node must start from the same genesis model, across processes and machines.
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"invalid input shape {input_shape!r}")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    if name in HIDDEN:
        return DenseNet(math.prod(shape), HIDDEN[name], num_classes, seed)
    if name == "cnn":
        if len(shape) != 3:
            raise ValueError(f"cnn needs an image input shape (C, H, W), got {shape}")
        if shape[1] < 4 or shape[2] < 4:
            raise ValueError(f"image {shape[1]}x{shape[2]} is too small for two 2x2 poolings")
        from learning.torchnet import build_cnn  # torch: only for this model
        return build_cnn((shape[0], shape[1], shape[2]), num_classes, seed)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def num_params(model: Net) -> int:
    """Number of trainable scalars, i.e. the length of the model's flat vector."""
    return int(model.flat.size)


def feature_groups(model: Net) -> np.ndarray:
    """The feature group of every entry of the model's flat vector (:func:`get_flat` order), int64.

    A weight tensor (out, in, ...) has one group per input: a column of a linear layer's matrix
    (the weights leaving one input pixel or hidden unit), an input channel of a convolution. A
    bias is one group. The aggregation's feature clip (:mod:`learning.aggregation.clustering`)
    compares updates group by group: a backdoor's trigger is an input that honest data rarely
    shows, so its push lands on the groups of that input.
    """
    ids: list[np.ndarray] = []
    count = 0
    for shape in model.shapes:
        if len(shape) >= 2:
            column = np.arange(shape[1]).reshape(1, -1, *([1] * (len(shape) - 2)))
            ids.append(count + np.broadcast_to(column, shape).ravel())
            count += shape[1]
        else:
            ids.append(np.full(math.prod(shape), count))
            count += 1
    return np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)


def get_flat(model: Net) -> np.ndarray:
    """A fresh float32 copy of all parameters."""
    return model.flat.copy()


def set_flat(model: Net, vec: np.ndarray) -> None:
    """Load flat vector ``vec`` into ``model`` in place (one copy, no reallocation)."""
    arr = np.asarray(vec)
    if arr.shape != model.flat.shape:
        raise ValueError(f"flat vector has shape {arr.shape}, model needs ({model.flat.size},)")
    if not np.all(np.isfinite(arr)):
        raise ValueError("flat vector contains NaN or infinity")
    model.flat[...] = arr
