"""Local SGD and Adam steps written against tensors, with ``torch.optim``'s arithmetic.

A node builds an optimizer every local round. The first ``torch.optim`` optimizer a process
builds imports ``torch._dynamo`` and sympy (``Optimizer.add_param_group`` is wrapped by
``torch._disable_dynamo``): about 68 MB of private memory per daemon, for two update rules of a
few lines. These classes apply the same update, operation for operation, as the single-tensor
(CPU) paths of ``torch.optim.SGD`` (momentum, L2 weight decay, no dampening or Nesterov) and
``torch.optim.Adam`` (L2 weight decay, no AMSGrad), so training results do not change
(``tests/learning/test_optimizers.py`` checks them against torch's). The ``local-dp`` preset
still wraps a ``torch.optim`` optimizer in Opacus' ``DPOptimizer`` (:mod:`learning.dpsgd`):
only that preset pays for it.
"""

from __future__ import annotations

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam")


class SGD:
    """``torch.optim.SGD(params, lr, momentum, weight_decay)``: the momentum buffer starts as
    the first gradient, later ones are ``momentum * buf + grad``."""

    def __init__(self, params: list[nn.Parameter], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        self.params, self.lr, self.momentum, self.weight_decay = params, lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(params)

    def zero_grad(self) -> None:
        """Drop the gradients (torch's default ``set_to_none``: the next backward allocates anew)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = torch.clone(g).detach()
                else:
                    buf.mul_(self.momentum).add_(g)
                g = buf
            p.add_(g, alpha=-self.lr)


class Adam(SGD):
    """``torch.optim.Adam(params, lr, weight_decay=weight_decay)`` with torch's defaults
    (betas 0.9 and 0.999, eps 1e-8) and its bias-corrected step."""

    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, params: list[nn.Parameter], lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, 0.0, weight_decay)
        self.steps = 0
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.steps += 1
        step_size = self.lr / (1 - b1 ** self.steps)
        bc2_sqrt = (1 - b2 ** self.steps) ** 0.5
        for p, (m, v) in zip(self.params, self.moments):
            if p.grad is None:
                continue
            g = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(self.eps), value=-step_size)


def make_optimizer(name: str, params: list[nn.Parameter], lr: float, momentum: float,
                   weight_decay: float) -> SGD:
    """The local optimizer ``name`` (one of :data:`OPTIMIZERS`); Adam has no momentum setting."""
    if name == "sgd":
        return SGD(params, lr, momentum, weight_decay)
    if name == "adam":
        return Adam(params, lr, weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
