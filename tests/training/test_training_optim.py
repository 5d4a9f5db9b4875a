import pytest
import torch

from hpo.errors import TrainingError, UnknownNameError
from hpo.training import TrainConfig
from hpo.training.factories import optimizer_from_config, optimizer_kwargs
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
    opt = optimizer_from_config(_params(), TrainConfig(optimizer=name, lr=0.05, weight_decay=1e-4))
    assert type(opt) is EXPECTED[name]
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.05, 1e-4)


def test_momentum_reaches_sgd_and_rmsprop():
    sgd = optimizer_from_config(_params(), TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True))
    assert (sgd.param_groups[0]["momentum"], sgd.param_groups[0]["nesterov"]) == (0.8, True)
    rms = optimizer_from_config(_params(), TrainConfig(optimizer="rmsprop", momentum=0.5))
    assert rms.param_groups[0]["momentum"] == 0.5


def test_nesterov_without_momentum_names_both_keys():
    with pytest.raises(TrainingError) as exc:
        optimizer_from_config(_params(), TrainConfig(optimizer="sgd", momentum=0.0, nesterov=True))
    assert "train.nesterov" in str(exc.value) and "train.momentum" in str(exc.value)


def test_the_factory_takes_keywords_and_uses_the_lr_as_given():
    opt = make_optimizer(_params(), name="adamw", lr=0.25, weight_decay=0.0, momentum=0.0,
                         nesterov=False)
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["lr"] == 0.25


def test_the_adapter_reads_every_optimizer_key_and_no_other():
    cfg = TrainConfig(optimizer="sgd", lr=0.5, weight_decay=0.1, momentum=0.7, nesterov=True)
    assert optimizer_kwargs(cfg) == {"name": "sgd", "lr": 0.5, "weight_decay": 0.1,
                                     "momentum": 0.7, "nesterov": True}


def test_unknown_name_from_registry():
    with pytest.raises(UnknownNameError, match="did you mean 'sgd'"):
        OPTIMIZERS.get("sdg")
