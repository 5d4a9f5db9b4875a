"""Learning-rate schedules: the lr each epoch starts with, as ``EpochMetrics.lr`` records it.

Digits has 1078 training images; at batch 512 an epoch is 3 optimiser steps.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from hpo.models import MLPConfig
from hpo.training import DataConfig, TrainConfig, train_model
from hpo.training.factories import schedule_from_config
from hpo.training.schedules import SCHEDULES

DATA = DataConfig()
TINY = MLPConfig(n_layers=1, width=16)
STEPS = 3  # batches per epoch at batch_size 512
LR = 0.01


def recorded_lrs(**train: object) -> list[float]:
    cfg = TrainConfig(batch_size=512, optimizer="sgd", lr=LR, **train)  # type: ignore[arg-type]
    return [m.lr for m in train_model(DATA, TINY, cfg).history]


def cosine(t: float, total: float, high: float, low: float) -> float:
    return low + (high - low) * (1 + math.cos(math.pi * t / total)) / 2


def test_registry_names():
    assert SCHEDULES.names() == ["cosine", "none", "one_cycle", "plateau", "step"]


def test_none_keeps_the_lr():
    assert recorded_lrs(epochs=3) == [LR] * 3


def test_step_decays_every_step_size_epochs():
    lrs = recorded_lrs(epochs=5, schedule="step", step_size=2, gamma=0.5)
    assert lrs == pytest.approx([LR, LR, LR / 2, LR / 2, LR / 4])


def test_cosine_anneals_to_min_lr_over_the_epochs():
    lrs = recorded_lrs(epochs=4, schedule="cosine", min_lr=1e-4)
    assert lrs == pytest.approx([cosine(e, 4, LR, 1e-4) for e in range(4)])


def test_warmup_ramps_linearly_then_the_schedule_starts():
    lrs = recorded_lrs(epochs=6, schedule="cosine", warmup_epochs=2, min_lr=0.0)
    n = 2 * STEPS  # warm-up batches: lr / (n + 1), 2 lr / (n + 1), ..., lr
    ramp = [LR / (n + 1), LR * (STEPS + 1) / (n + 1)]
    assert lrs == pytest.approx(ramp + [cosine(e, 4, LR, 0.0) for e in range(4)])


def test_warmup_alone_then_constant():
    lrs = recorded_lrs(epochs=4, warmup_epochs=2)
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(LR)
    assert lrs[3] == pytest.approx(LR)


def test_one_cycle_rises_to_lr_then_anneals_per_batch():
    lrs = recorded_lrs(epochs=5, schedule="one_cycle")
    assert lrs[0] == pytest.approx(LR / 25)
    peak = lrs.index(max(lrs))
    assert 0 < peak < 4 and max(lrs) <= LR
    assert lrs[peak:] == sorted(lrs[peak:], reverse=True)
    assert lrs[-1] < LR / 5


def test_one_cycle_rise_follows_warmup_epochs():
    # Rising for 2 of 4 epochs (12 batches): the last batch of epoch 2 (step 5) runs at lr,
    # then a cosine falls over steps 5..11 to lr / 25 / 1e4; epoch 3 starts at step 6.
    lrs = recorded_lrs(epochs=4, schedule="one_cycle", warmup_epochs=2)
    low = LR / 25 / 1e4
    assert lrs[0] < lrs[1] < lrs[2]
    assert lrs[2:] == pytest.approx([cosine(1, 6, LR, low), cosine(4, 6, LR, low)])


def test_plateau_decays_after_patience_epochs_without_improvement():
    # At lr 1e-30 the weights cannot move, so val_loss is the same every epoch: epoch 1 sets
    # the best, epochs 2 and 3 are the 2 bad epochs (plateau_patience), so epoch 4 starts
    # lower; the count restarts after a decay.
    cfg = TrainConfig(
        epochs=6,
        batch_size=512,
        optimizer="sgd",
        momentum=0.0,
        lr=1e-30,
        schedule="plateau",
        gamma=0.5,
        plateau_patience=2,
    )
    lrs = [m.lr for m in train_model(DATA, TINY, cfg).history]
    assert lrs == pytest.approx([1e-30, 1e-30, 1e-30, 5e-31, 5e-31, 5e-31], rel=1e-6)


def _unit(cfg: TrainConfig, steps: int, metric: list[float] | None = None) -> list[float]:
    """The lr at each epoch's start, stepping a schedule by hand (no training)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = schedule_from_config(opt, cfg, steps)
    lrs = []
    for epoch in range(cfg.epochs):
        lrs.append(schedule.lr)
        for _ in range(steps):
            opt.step()
            schedule.after_batch()
        if metric is not None:
            schedule.after_epoch(
                SimpleNamespace(val_loss=metric[epoch], val_accuracy=metric[epoch])
            )
    return lrs


def test_plateau_on_val_accuracy_wants_it_to_rise():
    cfg = TrainConfig(
        epochs=5,
        lr=1.0,
        schedule="plateau",
        plateau_metric="val_accuracy",
        plateau_patience=1,
        gamma=0.1,
    )
    # Rising accuracy: no decay. Then it falls once: decay.
    assert _unit(cfg, 2, [0.1, 0.2, 0.3, 0.4, 0.5]) == [1.0] * 5
    assert _unit(cfg, 2, [0.1, 0.2, 0.1, 0.4, 0.5]) == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1])


def test_plateau_waits_for_the_warmup():
    cfg = TrainConfig(epochs=5, lr=1.0, schedule="plateau", warmup_epochs=2, plateau_patience=1)
    # Epochs during the warm-up are not judged; the last warm-up epoch sets the baseline.
    lrs = _unit(cfg, 2, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert lrs[:3] == pytest.approx([0.2, 0.6, 1.0])
    assert lrs[3:] == pytest.approx([0.1, 0.01])


def test_plateau_floor_is_min_lr():
    cfg = TrainConfig(
        epochs=4, lr=1.0, schedule="plateau", plateau_patience=1, gamma=0.1, min_lr=0.05
    )
    assert _unit(cfg, 1, [1.0, 2.0, 3.0, 4.0]) == pytest.approx([1.0, 1.0, 0.1, 0.05])


def test_cosine_is_smooth_within_an_epoch():
    cfg = TrainConfig(epochs=2, lr=1.0, schedule="cosine")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = schedule_from_config(opt, cfg, 4)
    seen = []
    for _ in range(8):
        seen.append(schedule.lr)
        opt.step()
        schedule.after_batch()
    assert seen == pytest.approx([cosine(t, 8, 1.0, 0.0) for t in range(8)])


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_more_batches_than_counted_never_raise(name):
    # If a source yields more batches than batch_bounds counted, OneCycleLR would raise;
    # the schedule stops stepping at the count instead.
    cfg = TrainConfig(epochs=1, lr=1.0, schedule=name)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = schedule_from_config(opt, cfg, 2)
    for _ in range(10):
        opt.step()
        schedule.after_batch()
    assert math.isfinite(schedule.lr) and schedule.lr >= 0


@pytest.mark.parametrize("epochs,steps", [(1, 1), (1, 2), (2, 1), (3, 1)])
def test_one_cycle_on_tiny_runs(epochs, steps):
    cfg = TrainConfig(epochs=epochs, lr=1.0, schedule="one_cycle", warmup_epochs=epochs)
    lrs = _unit(cfg, steps)
    assert lrs[0] == pytest.approx(1 / 25)


@pytest.mark.filterwarnings("error")
def test_a_skipped_first_optimiser_step_is_not_warned_about():
    # fp16's GradScaler skips steps while calibrating; torch would warn on the first one.
    cfg = TrainConfig(epochs=2, lr=1.0, schedule="cosine", warmup_epochs=1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = schedule_from_config(opt, cfg, 3)
    schedule.after_batch()  # no opt.step() before it
    opt.step()
    schedule.after_batch()
