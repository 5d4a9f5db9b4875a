"""The adapters from ``TrainConfig`` to the factories, and the only place that reads it for them.

The factories (``optim.make_optimizer``, ``schedules.make_schedule``, ``losses.make_loss``)
take explicit keyword arguments, so they can be called and tested without a config, and the
registries they sit beside stay free of it (``config`` imports the registries to check names,
so they must not import ``config`` back). Defaults live in ``TrainConfig`` alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from hpo.training.config import TrainConfig
from hpo.training.losses import Loss, make_loss
from hpo.training.optim import make_optimizer
from hpo.training.schedules import Schedule, make_schedule

if TYPE_CHECKING:
    import torch

__all__ = [
    "loss_from_config",
    "optimizer_from_config",
    "optimizer_kwargs",
    "schedule_from_config",
    "schedule_kwargs",
]


def optimizer_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """``make_optimizer``'s keywords, read from ``train.*``."""
    return {
        "name": cfg.optimizer,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "momentum": cfg.momentum,
        "nesterov": cfg.nesterov,
    }


def schedule_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """``make_schedule``'s keywords, read from ``train.*`` (all but the batches per epoch)."""
    return {
        "name": cfg.schedule,
        "epochs": cfg.epochs,
        "warmup_epochs": cfg.warmup_epochs,
        "step_size": cfg.step_size,
        "gamma": cfg.gamma,
        "min_lr": cfg.min_lr,
        "plateau_patience": cfg.plateau_patience,
        "plateau_metric": cfg.plateau_metric,
    }


def optimizer_from_config(params: Iterable[Any], cfg: TrainConfig) -> torch.optim.Optimizer:
    return make_optimizer(params, **optimizer_kwargs(cfg))


def schedule_from_config(
    opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> Schedule:
    return make_schedule(opt, steps_per_epoch=steps_per_epoch, **schedule_kwargs(cfg))


def loss_from_config(
    cfg: TrainConfig, labels: torch.Tensor, num_classes: int, device: torch.device
) -> Loss:
    return make_loss(
        labels,
        num_classes,
        device,
        label_smoothing=cfg.label_smoothing,
        class_weights=cfg.class_weights,
    )
