"""The MLP: Linear -> ReLU -> Dropout for each hidden layer, then a Linear classifier. Glorot weights, zero biases."""
import torch
from torch import nn


class MLP(nn.Sequential):
    def __init__(self, sizes=(784, 512, 256, 128, 10), dropout: float = 0.2):
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


def parameter_count_of(sizes) -> int:
    """Parameters of MLP(sizes) without building it: each Linear's weights and biases."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))


def training_bytes(sizes, optimizer: str) -> int:
    """Memory one rank needs for MLP(sizes) in training: float32 parameters, gradients, Horovod's fusion buffer,
    and the optimizer's state (Adam: 2 moments; SGD: momentum)."""
    return parameter_count_of(sizes) * 4 * (3 + (2 if optimizer == "adam" else 1))
