"""Local SGD and Adam on a model's flat parameter vector, with ``torch.optim``'s update rules.

One flat float32 vector holds every parameter of a model (:class:`learning.models.Net`), and the
optimizer steps it in place from a flat gradient, whatever computed it (numpy for the dense models,
autograd for torch ones). The rules are those of ``torch.optim.SGD`` (momentum, L2 weight decay,
no dampening or Nesterov: the buffer starts as the first gradient) and ``torch.optim.Adam`` (L2
weight decay, no AMSGrad, betas 0.9 and 0.999, eps 1e-8, bias-corrected step);
``tests/learning/test_optimizers.py`` compares the trajectories with torch's. Written here, a node
needs neither torch (the dense models) nor what ``torch.optim`` imports on first use
(``torch._dynamo`` and sympy, about 68 MB of private memory).
"""

from __future__ import annotations

import numpy as np

OPTIMIZERS = ("sgd", "adam")


class SGD:
    def __init__(self, params: np.ndarray, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params = params
        self.lr, self.momentum, self.weight_decay = np.float32(lr), np.float32(momentum), np.float32(weight_decay)
        self.buffer: np.ndarray | None = None

    def _decayed(self, grad: np.ndarray) -> np.ndarray:
        return grad if self.weight_decay == 0 else grad + self.weight_decay * self.params

    def step(self, grad: np.ndarray) -> None:
        """Move the parameters (in place) by one step against ``grad``."""
        g = self._decayed(grad)
        if self.momentum != 0:
            if self.buffer is None:
                self.buffer = g.copy()
            else:
                self.buffer *= self.momentum
                self.buffer += g
            g = self.buffer
        self.params -= self.lr * g


class Adam(SGD):
    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, params: np.ndarray, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, 0.0, weight_decay)
        self.steps = 0
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)

    def step(self, grad: np.ndarray) -> None:
        b1, b2 = self.betas
        self.steps += 1
        step_size = np.float32(self.lr / (1 - b1 ** self.steps))
        bc2_sqrt = np.float32((1 - b2 ** self.steps) ** 0.5)
        g = self._decayed(grad)
        self.m += (g - self.m) * np.float32(1 - b1)
        self.v *= np.float32(b2)
        self.v += np.float32(1 - b2) * g * g
        self.params -= step_size * self.m / (np.sqrt(self.v) / bc2_sqrt + np.float32(self.eps))


def make_optimizer(name: str, params: np.ndarray, lr: float, momentum: float, weight_decay: float) -> SGD:
    """The local optimizer ``name`` (one of :data:`OPTIMIZERS`) over ``params`` (a model's ``flat``);
    Adam has no momentum setting."""
    if name == "sgd":
        return SGD(params, lr, momentum, weight_decay)
    if name == "adam":
        return Adam(params, lr, weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
