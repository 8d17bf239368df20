"""The MLP: Linear -> ReLU -> Dropout for each hidden layer, then a Linear classifier. Glorot weights, zero biases."""
import math

import torch
from torch import nn


class MLP(nn.Sequential):
    def __init__(self, sizes=None, dropout: float = 0.2):
        sizes = sizes or default_sizes()
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:  # hidden layer
                layers += [nn.ReLU(), nn.Dropout(dropout)]
        super().__init__(*layers)
        self.sizes = tuple(sizes)
        for layer in self:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def default_sizes() -> tuple:
    """The MLP hvd_mlp trains by default: MNIST's 28 x 28 pixels, the default hidden layers, the classes."""
    from hvd_mlp.config import Config  # here: config needs nothing of the model
    from hvd_mlp.data import NUM_CLASSES
    return (28 * 28, *Config().hidden, NUM_CLASSES)


def parameter_shapes(sizes) -> list:
    """[(name, shape)] of MLP(sizes)'s parameters without building it, in Horovod's order of names: each Linear
    (index 3i: Linear, ReLU, Dropout per hidden layer) has a weight (out, in) and a bias (out,)."""
    return [shape for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]))
            for shape in ((f"{3 * i}.weight", (fan_out, fan_in)), (f"{3 * i}.bias", (fan_out,)))]


def parameter_count_of(sizes) -> int:
    """Parameters of MLP(sizes) without building it."""
    return sum(math.prod(shape) for _, shape in parameter_shapes(sizes))


def training_bytes(sizes, optimizer: str) -> int:
    """Memory one rank needs for MLP(sizes) in training: float32 parameters, gradients, Horovod's fusion buffer,
    and the optimizer's state (Adam: 2 moments; SGD: momentum)."""
    return parameter_count_of(sizes) * 4 * (3 + (2 if optimizer == "adam" else 1))
