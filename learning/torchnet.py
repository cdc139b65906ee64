"""PyTorch networks behind the model interface: the zoo's CNN and a genesis's own model code.

Importing this module imports torch (218 MB resident), so only a node whose model needs it does:
the dense zoo models are numpy (:mod:`learning.dense`). :class:`TorchNet` gives a ``torch.nn.Module``
the interface the training loop uses (:class:`learning.models.Net`). Its parameters are re-pointed
to views of one contiguous float32 buffer, and ``flat`` is a numpy view of that buffer: reading the
vector is one memcpy, and the optimizer (:mod:`learning.optimizers`) steps the module's weights in
place. Per-example gradients for DP-SGD come from ``torch.func`` (``vmap`` over ``grad``), which
leaves no hooks on the module.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from learning.dense import CLIP_EPS, DenseNet


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


def seeded(build, seed: int) -> nn.Module:
    """``build()`` with torch's global RNG seeded to ``seed`` and restored afterwards, so a model's
    initialisation neither depends on nor disturbs the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_cnn(image_shape: tuple[int, int, int], num_classes: int, seed: int) -> TorchNet:
    """The zoo's CNN, initialised from ``seed``."""
    return TorchNet(seeded(lambda: SmallCNN(image_shape, num_classes), seed))


def torch_module(net: DenseNet | TorchNet) -> nn.Module:
    """``net`` as a ``torch.nn.Module`` holding its current weights (a dense net is rebuilt as the
    equal ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU``), for export."""
    if isinstance(net, TorchNet):
        return net.module
    layers: list[nn.Module] = []
    for k, (w, b) in enumerate(net.layers):
        linear = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear] + ([nn.ReLU()] if k < len(net.layers) - 1 else [])
    return nn.Sequential(*layers)


class TorchNet:
    """A float32 ``torch.nn.Module`` that takes flat ``(n, F)`` inputs, seen as a :class:`Net`."""

    def __init__(self, module: nn.Module) -> None:
        params = list(module.parameters())
        if any(p.dtype != torch.float32 for p in params):
            raise TypeError("flat vectors need float32 parameters")
        self.module = module
        self.shapes = [tuple(p.shape) for p in params]
        with torch.no_grad():
            buf = torch.cat([p.detach().reshape(-1) for p in params]) if params else torch.zeros(0)
            offset = 0
            for p in params:
                p.data = buf[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
        self.flat = buf.numpy()

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.module.eval()
        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    def loss_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        self.module.train()
        params = list(self.module.parameters())
        with torch.enable_grad():
            loss = F.cross_entropy(self.module(torch.from_numpy(x)), torch.from_numpy(y))
            grads = torch.autograd.grad(loss, params)
        return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads]).numpy()

    def clipped_grad_sum(self, x: np.ndarray, y: np.ndarray, max_norm: float) -> tuple[float, np.ndarray]:
        self.module.train()
        named = {k: v.detach() for k, v in self.module.named_parameters()}

        def loss(params: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(torch.func.functional_call(self.module, params, (xi[None],)), yi[None])

        with torch.enable_grad():
            per = torch.func.vmap(torch.func.grad_and_value(loss), in_dims=(None, 0, 0))(
                named, torch.from_numpy(x), torch.from_numpy(y))
        grads, losses = per
        flat = torch.cat([g.reshape(len(y), -1) for g in grads.values()], dim=1)
        factor = (max_norm / (flat.norm(dim=1) + CLIP_EPS)).clamp(max=1.0)
        return float(losses.sum()), (factor @ flat).numpy()

    def input_grad(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        self.module.eval()
        with torch.enable_grad():
            xt = torch.from_numpy(np.array(x, dtype=np.float32)).requires_grad_(True)
            loss = F.cross_entropy(self.module(xt), torch.from_numpy(y), reduction="sum")
            (grad,) = torch.autograd.grad(loss, xt)
        return grad.numpy()

