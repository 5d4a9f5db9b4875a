"""Optimiser registry. Factories take explicit keywords and never see a config: the one
adapter reading ``TrainConfig`` is ``hpo.training.factories.optimizer_kwargs``.

Every factory accepts the same keywords so a search can switch optimiser without the other
``train.*`` keys changing meaning; keys an optimiser has no use for are ignored. The values
arrive validated (``TrainConfig``) and are passed on as they are.
Torch is imported inside the factories, so the registry (and spec validation) is torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from hpo.errors import TrainingError
from hpo.registry import Registry

if TYPE_CHECKING:
    import torch

OptimizerFactory = Callable[..., "torch.optim.Optimizer"]
OPTIMIZERS = Registry[OptimizerFactory]("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(
    params: Iterable[Any], *, lr: float, momentum: float, nesterov: bool, weight_decay: float
) -> torch.optim.Optimizer:
    import torch

    if nesterov and momentum == 0:
        # torch's own message does not name our keys; say which two disagree.
        raise TrainingError(
            "train.nesterov is true but train.momentum is 0; Nesterov needs momentum > 0"
        )
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
    )


def _adaptive(class_name: str) -> Callable[..., Any]:
    """Adam-family optimisers: adaptive step sizes, no momentum or Nesterov arguments."""

    def build(
        params: Iterable[Any], *, lr: float, momentum: float, nesterov: bool, weight_decay: float
    ) -> torch.optim.Optimizer:
        import torch

        # class_name comes from the table below, never from user input.
        return getattr(torch.optim, class_name)(params, lr=lr, weight_decay=weight_decay)

    return build


for _name, _class_name in (("adam", "Adam"), ("adamw", "AdamW"), ("adamax", "Adamax")):
    OPTIMIZERS.add(_name, _adaptive(_class_name))


@OPTIMIZERS.register("rmsprop")
def rmsprop(
    params: Iterable[Any], *, lr: float, momentum: float, nesterov: bool, weight_decay: float
) -> torch.optim.Optimizer:
    import torch

    return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_optimizer(
    params: Iterable[Any],
    *,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
) -> torch.optim.Optimizer:
    """The optimiser registered as ``name``; no defaults here, ``TrainConfig`` holds them."""
    factory = OPTIMIZERS.get(name)
    return factory(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
