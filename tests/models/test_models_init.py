"""Initialisers must actually set the weights they claim to, and leave the rest alone."""

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from hpo.errors import UnknownNameError
from hpo.models import INITIALIZERS, MLPConfig, apply_initializer, create_model


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Flatten(), nn.Linear(16 * 6 * 6, 256)
    )


def test_registry_names():
    assert INITIALIZERS.names() == [
        "default", "kaiming_normal", "kaiming_uniform", "normal", "orthogonal",
        "trunc_normal", "uniform", "xavier_normal", "xavier_uniform",
    ]


def test_default_leaves_everything_unchanged():
    before = _net().state_dict()
    after = apply_initializer(_net(), "default").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert before["0.bias"].abs().sum() > 0  # PyTorch's own bias init survived


@pytest.mark.parametrize("name", [n for n in INITIALIZERS.names() if n != "default"])
def test_initializer_sets_weights_zeroes_biases_skips_batchnorm(name):
    before = _net().state_dict()
    model = apply_initializer(_net(), name)
    for i in (0, 3):
        assert not torch.equal(model[i].weight, before[f"{i}.weight"])
        assert torch.count_nonzero(model[i].bias) == 0
    assert torch.equal(model[1].weight, before["1.weight"])  # BatchNorm stays identity


def test_orthogonal_square_layer():
    layer = apply_initializer(nn.Sequential(nn.Linear(32, 32)), "orthogonal")[0]
    w = layer.weight
    torch.testing.assert_close(w @ w.T, torch.eye(32), atol=1e-5, rtol=0)


def test_normal_std():
    layer = apply_initializer(nn.Sequential(nn.Linear(512, 512)), "normal")[0]
    assert abs(layer.weight.std().item() - 0.02) < 0.001
    layer = apply_initializer(nn.Sequential(nn.Linear(512, 512)), "normal", std=0.1)[0]
    assert abs(layer.weight.std().item() - 0.1) < 0.005


def test_trunc_normal_is_cut_at_two_std():
    layer = apply_initializer(nn.Sequential(nn.Linear(512, 512)), "trunc_normal", std=0.05)[0]
    assert layer.weight.abs().max().item() <= 0.1
    # A normal cut at +-2 std has std of about 0.88 std.
    assert abs(layer.weight.std().item() - 0.88 * 0.05) < 0.003


@pytest.mark.parametrize("std", [0.01, 0.3])
def test_create_model_passes_init_std(std):
    model = create_model(MLPConfig(init="normal", init_std=std, width=256), (1, 16, 16), 10)
    assert abs(model[1].weight.std().item() - std) < 0.05 * std
    other = create_model(MLPConfig(init="xavier_normal", init_std=std, width=256), (1, 16, 16), 10)
    assert abs(other[1].weight.std().item() - (2 / (256 + 256)) ** 0.5) < 0.005  # std unused


def test_kaiming_normal_std():
    layer = apply_initializer(nn.Sequential(nn.Linear(512, 256)), "kaiming_normal")[0]
    assert abs(layer.weight.std().item() - math.sqrt(2 / 512)) < 0.003


def test_xavier_uniform_bound():
    layer = apply_initializer(nn.Sequential(nn.Linear(300, 100)), "xavier_uniform")[0]
    bound = math.sqrt(6 / (300 + 100))
    assert layer.weight.abs().max().item() <= bound
    assert layer.weight.abs().max().item() > 0.95 * bound


def test_create_model_applies_cfg_init():
    # 1x8x8 flattens to 64, so the first hidden layer is square.
    model = create_model(MLPConfig(init="orthogonal", width=64), (1, 8, 8), 10)
    w = model[1].weight
    torch.testing.assert_close(w @ w.T, torch.eye(64), atol=1e-5, rtol=0)


def test_unknown_initializer():
    with pytest.raises(UnknownNameError, match="did you mean 'orthogonal'"):
        apply_initializer(_net(), "orthogonl")


def _linear_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("bound", [0.05, 0.5])
def test_uniform_init_stays_inside_its_range_on_an_mlp(bound):
    torch.manual_seed(0)
    model = create_model(MLPConfig(init="uniform", init_range=bound, n_layers=3, width=64), (1, 8, 8), 10)
    weights = _linear_weights(model)
    assert len(weights) == 4
    for w in weights:
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() > 0.9 * bound  # spread over the range, not squeezed into it
        # U(-a, a) has std a / sqrt(3); 64x64 draws pin it to a few percent.
        assert abs(w.std().item() - bound / math.sqrt(3)) < 0.1 * bound
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, nn.Linear))


def test_uniform_default_range_is_a_twentieth():
    layer = apply_initializer(nn.Sequential(nn.Linear(256, 256)), "uniform")[0]
    assert 0.045 < layer.weight.abs().max().item() <= 0.05
    layer = apply_initializer(nn.Sequential(nn.Linear(256, 256)), "uniform", init_range=2.0)[0]
    assert 1.8 < layer.weight.abs().max().item() <= 2.0


def test_init_range_is_ignored_by_the_other_initialisers():
    torch.manual_seed(0)
    a = create_model(MLPConfig(init="xavier_uniform", init_range=0.001, width=32), (1, 8, 8), 10)
    torch.manual_seed(0)
    b = create_model(MLPConfig(init="xavier_uniform", width=32), (1, 8, 8), 10)
    assert all(torch.equal(x, y) for x, y in zip(_linear_weights(a), _linear_weights(b)))


@pytest.mark.parametrize("value", [0, -0.1, 11, float("inf")])
def test_init_range_out_of_bounds_is_rejected(value):
    with pytest.raises(ValidationError, match="init_range"):
        MLPConfig(init="uniform", init_range=value)


def test_a_torchvision_backbone_gets_its_init_range():
    # torchvision builders initialise themselves (only the head, over pretrained weights).
    from hpo.models import TorchvisionConfig

    model = create_model(TorchvisionConfig(arch="resnet18", init="uniform", init_range=0.3), (3, 32, 32), 10)
    weight = model.net.layer3[0].conv1.weight
    assert 0.27 < weight.abs().max().item() <= 0.3
