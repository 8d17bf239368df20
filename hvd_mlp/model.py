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
