"""Model: size of the default MLP and Glorot initialisation."""
import math

import torch

from hvd_mlp.model import MLP, default_sizes, parameter_count, parameter_count_of, parameter_shapes


def test_default_parameter_count():
    assert parameter_count(MLP()) == 567_434


def test_layers_and_output_shape():
    model = MLP((784, 32, 16, 10), dropout=0.3)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_glorot_weights_and_zero_biases():
    torch.manual_seed(0)
    first = MLP()[0]
    bound = math.sqrt(6 / (784 + 512))  # Glorot uniform: U(-b, b), variance b^2 / 3
    assert first.weight.abs().max() <= bound
    assert abs(first.weight.var().item() - bound ** 2 / 3) < 0.05 * bound ** 2 / 3
    assert abs(first.weight.mean().item()) < 1e-3
    assert all(torch.count_nonzero(m.bias) == 0 for m in MLP() if isinstance(m, torch.nn.Linear))


def test_shapes_without_building_match_the_model():
    for sizes in [default_sizes(), (20, 7, 3), (5, 2)]:
        built = [(name, tuple(p.shape)) for name, p in MLP(sizes).named_parameters()]
        assert parameter_shapes(sizes) == built
        assert parameter_count_of(sizes) == parameter_count(MLP(sizes))
