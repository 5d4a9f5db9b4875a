import pytest
import torch

from hpo.errors import TrainingError, UnknownNameError
from hpo.training import TrainConfig
from hpo.training.optim import OPTIMIZERS, make_optimizer

EXPECTED = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamax": torch.optim.Adamax,
    "rmsprop": torch.optim.RMSprop,
}


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


def test_registry_names():
    assert OPTIMIZERS.names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_make_optimizer_passes_lr_and_weight_decay(name):
    opt = make_optimizer(_params(), TrainConfig(optimizer=name, lr=0.05, weight_decay=1e-4))
    assert type(opt) is EXPECTED[name]
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.05, 1e-4)


def test_momentum_reaches_sgd_and_rmsprop():
    sgd = make_optimizer(_params(), TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True))
    assert (sgd.param_groups[0]["momentum"], sgd.param_groups[0]["nesterov"]) == (0.8, True)
    rms = make_optimizer(_params(), TrainConfig(optimizer="rmsprop", momentum=0.5))
    assert rms.param_groups[0]["momentum"] == 0.5


def test_nesterov_without_momentum_names_both_keys():
    with pytest.raises(TrainingError) as exc:
        make_optimizer(_params(), TrainConfig(optimizer="sgd", momentum=0.0, nesterov=True))
    assert "train.nesterov" in str(exc.value) and "train.momentum" in str(exc.value)


def test_unknown_name_from_registry():
    with pytest.raises(UnknownNameError, match="did you mean 'sgd'"):
        OPTIMIZERS.get("sdg")
