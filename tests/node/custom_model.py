"""A user's own PyTorch model, as a genesis task names it (``tests.node.custom_model:build``)."""

import math

from torch import nn


def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(math.prod(input_shape), 16), nn.ReLU(), nn.Linear(16, num_classes))
