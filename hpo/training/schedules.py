"""Learning-rate schedules: a registry of names (torch-free, so ``train.schedule`` is checked
without torch) whose factories build ``torch.optim.lr_scheduler`` objects.

Every schedule but ``plateau`` is stepped once per batch, so a warm-up or a cosine decay is
smooth even over few epochs; ``step_size`` and the cosine length are still counted in epochs,
so at every epoch boundary the lr is what a per-epoch schedule would give. ``plateau`` needs a
validation metric and is stepped once per epoch. A warm-up (``LinearLR``) runs first and the
schedule starts when it ends (``SequentialLR``); ``one_cycle`` has a rise of its own, whose
length ``warmup_epochs`` sets instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpo.registry import Registry

if TYPE_CHECKING:
    import torch

    from hpo.training.metrics import EpochMetrics

ONE_CYCLE_RISE = 0.3  # share of one_cycle spent rising when warmup_epochs is 0 (torch's default)
ONE_CYCLE_DIV = 25.0  # one_cycle starts at lr / 25 and ends at lr / 25 / 1e4 (torch's defaults)


@dataclass(frozen=True)
class Steps:
    """How many optimiser steps the run has, for factories that count in batches."""

    per_epoch: int
    epochs: int
    warmup: int  # batches of linear warm-up before the schedule proper

    @property
    def after_warmup(self) -> int:
        return max(1, self.per_epoch * self.epochs - self.warmup)


@dataclass(frozen=True)
class ScheduleEntry:
    # (optimizer, steps, **settings) -> an LRScheduler, or None for a constant lr; each
    # builder names the settings it uses and ignores the rest (see make_schedule)
    build: Callable[..., Any]
    per_epoch: bool = False  # stepped once per epoch with the validation metric (plateau)
    own_warmup: bool = False  # rises by itself; warmup_epochs sets how long (one_cycle)


SCHEDULES = Registry[ScheduleEntry]("schedule")


def _constant(opt: torch.optim.Optimizer, steps: Steps, **_: object) -> None:
    return None


def _step(
    opt: torch.optim.Optimizer, steps: Steps, *, step_size: int, gamma: float, **_: object
) -> Any:
    from torch.optim.lr_scheduler import StepLR

    return StepLR(opt, step_size=step_size * steps.per_epoch, gamma=gamma)


def _cosine(opt: torch.optim.Optimizer, steps: Steps, *, min_lr: float, **_: object) -> Any:
    from torch.optim.lr_scheduler import CosineAnnealingLR

    return CosineAnnealingLR(opt, T_max=steps.after_warmup, eta_min=min_lr)


def _one_cycle(
    opt: torch.optim.Optimizer, steps: Steps, *, warmup_epochs: int, **_: object
) -> Any:
    from torch.optim.lr_scheduler import OneCycleLR

    # Each phase must span a step or OneCycleLR divides by zero; a 1-2 batch run gets the
    # start of a 3-step cycle.
    total = max(steps.per_epoch * steps.epochs, 3)
    rise = warmup_epochs / steps.epochs if warmup_epochs else ONE_CYCLE_RISE
    rise = min(max(rise, 1.5 / total), 1 - 0.5 / total)
    # The peak is each group's own lr (train.lr), so the lr reaches torch in one place; the
    # loop builds the schedule before a checkpoint is restored, while that is still true.
    # cycle_momentum=False: train.momentum keeps its meaning (OneCycleLR would override it).
    return OneCycleLR(
        opt,
        max_lr=[group["lr"] for group in opt.param_groups],
        total_steps=total,
        pct_start=rise,
        div_factor=ONE_CYCLE_DIV,
        cycle_momentum=False,
    )


def _plateau(
    opt: torch.optim.Optimizer,
    steps: Steps,
    *,
    gamma: float,
    min_lr: float,
    plateau_patience: int,
    plateau_metric: str,
    **_: object,
) -> Any:
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    return ReduceLROnPlateau(
        opt,
        mode="max" if plateau_metric == "val_accuracy" else "min",
        factor=gamma,
        # Ours counts the bad epochs before a decay (like early stopping's patience);
        # torch's counts the bad epochs it tolerates.
        patience=plateau_patience - 1,
        min_lr=min_lr,
    )


SCHEDULES.add("none", ScheduleEntry(_constant))
SCHEDULES.add("step", ScheduleEntry(_step))
SCHEDULES.add("cosine", ScheduleEntry(_cosine))
SCHEDULES.add("one_cycle", ScheduleEntry(_one_cycle, own_warmup=True))
SCHEDULES.add("plateau", ScheduleEntry(_plateau, per_epoch=True))


class Schedule:
    """Drives the optimiser's lr: ``after_batch()`` after every step, ``after_epoch()`` after
    validation. Setting an lr is host-side bookkeeping: no device synchronisation."""

    def __init__(
        self,
        opt: torch.optim.Optimizer,
        per_batch: Any,
        per_epoch: Any,
        *,
        metric: str,
        warmup_steps: int,
        max_steps: int,
    ):
        self.opt = opt
        self._per_batch = per_batch
        self._per_epoch = per_epoch
        self._metric = metric
        self._warmup_steps = warmup_steps
        self._max_steps = max_steps
        self._steps = 0

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def after_batch(self) -> None:
        self._steps += 1
        # The count of batches is known up front, but never step past it (OneCycleLR raises).
        if self._per_batch is None or self._steps > self._max_steps:
            return
        if self._steps > 1:
            self._per_batch.step()
            return
        with warnings.catch_warnings():
            # fp16's GradScaler skips the optimiser step while it calibrates its scale, and
            # torch warns about that on a schedule's first step only; it is expected here.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self._per_batch.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self._steps,
            "per_batch": None if self._per_batch is None else self._per_batch.state_dict(),
            "per_epoch": None if self._per_epoch is None else self._per_epoch.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._steps = state["steps"]
        if self._per_batch is not None:
            self._per_batch.load_state_dict(state["per_batch"])
        if self._per_epoch is not None:
            self._per_epoch.load_state_dict(state["per_epoch"])

    def after_epoch(self, metrics: EpochMetrics) -> None:
        if self._per_epoch is not None and self._steps >= self._warmup_steps:
            self._per_epoch.step(getattr(metrics, self._metric))


def make_schedule(
    opt: torch.optim.Optimizer,
    *,
    name: str,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int,
    step_size: int,
    gamma: float,
    min_lr: float,
    plateau_patience: int,
    plateau_metric: str,
) -> Schedule:
    """The schedule registered as ``name``, after ``warmup_epochs`` of linear warm-up.

    Every setting is required (``TrainConfig`` holds the defaults); the one adapter reading a
    config is ``hpo.training.factories.schedule_kwargs``.
    """
    from torch.optim.lr_scheduler import LinearLR, SequentialLR

    entry = SCHEDULES.get(name)
    warmup = 0 if entry.own_warmup else min(warmup_epochs, epochs) * steps_per_epoch
    steps = Steps(per_epoch=steps_per_epoch, epochs=epochs, warmup=warmup)
    main = entry.build(
        opt,
        steps,
        warmup_epochs=warmup_epochs,
        step_size=step_size,
        gamma=gamma,
        min_lr=min_lr,
        plateau_patience=plateau_patience,
        plateau_metric=plateau_metric,
    )
    per_epoch = main if entry.per_epoch else None
    per_batch = None if entry.per_epoch else main
    if warmup:
        # From lr / (warmup + 1) on the first batch to lr on the first batch after warm-up.
        ramp = LinearLR(opt, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup)
        per_batch = ramp if per_batch is None else SequentialLR(opt, [ramp, per_batch], [warmup])
    return Schedule(
        opt,
        per_batch,
        per_epoch,
        metric=plateau_metric,
        warmup_steps=warmup,
        # The last batch's step would only set the lr of a batch that never comes.
        max_steps=steps_per_epoch * epochs - 1,
    )
