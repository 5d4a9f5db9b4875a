"""End-to-end training on digits (offline, ~1 s per run on CPU)."""

import math

import pytest

from hpo.errors import TrainingError
from hpo.models import CNNConfig, MLPConfig
from hpo.training import (
    DataConfig,
    EarlyStoppingConfig,
    EpochMetrics,
    TrainConfig,
    TrainingResult,
    train_model,
)

DATA = DataConfig()
SMALL_MLP = MLPConfig(n_layers=1, width=64)


class StopAt:
    def __init__(self, epoch: int):
        self.epoch = epoch
        self.seen: list[EpochMetrics] = []

    def report(self, metrics: EpochMetrics) -> bool:
        self.seen.append(metrics)
        return metrics.epoch >= self.epoch


def test_mlp_learns_digits():
    reporter = StopAt(epoch=10**9)
    result = train_model(DATA, SMALL_MLP, TrainConfig(epochs=5), reporter=reporter)
    assert isinstance(result, TrainingResult)
    assert [m.epoch for m in result.history] == [1, 2, 3, 4, 5]
    assert reporter.seen == result.history
    assert result.history[-1].val_accuracy >= 0.9
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert not result.pruned and not result.stopped_early
    assert result.params_trainable == result.params_total == 64 * 64 + 64 + 64 * 10 + 10
    assert result.device == "cpu" and result.seed == 0
    assert result.seconds_per_epoch > 0
    assert result.peak_memory_mb is not None and result.peak_memory_mb > 0
    assert result.images_per_second > 0
    assert result.precision == "fp32"
    assert [m.lr for m in result.history] == [1e-3] * 5  # no schedule: constant
    assert all(math.isfinite(m.val_loss) and 0 <= m.val_accuracy <= 1 for m in result.history)


def test_same_seed_same_curve():
    cfg = TrainConfig(epochs=2, seed=7)
    a = train_model(DATA, SMALL_MLP, cfg).history
    b = train_model(DATA, SMALL_MLP, cfg).history
    assert [(m.train_loss, m.val_loss) for m in a] == [(m.train_loss, m.val_loss) for m in b]
    c = train_model(DATA, SMALL_MLP, TrainConfig(epochs=2, seed=8)).history
    assert a[0].train_loss != c[0].train_loss


def test_reporter_prunes():
    result = train_model(DATA, SMALL_MLP, TrainConfig(epochs=10), reporter=StopAt(epoch=2))
    assert result.pruned and not result.stopped_early
    assert len(result.history) == 2


def test_early_stopping():
    # No improvement can exceed min_delta=1 (accuracy is at most 1), so epoch 2 is the last.
    es = EarlyStoppingConfig(patience=1, min_delta=1.0)
    result = train_model(DATA, SMALL_MLP, TrainConfig(epochs=10, early_stopping=es))
    assert result.stopped_early and not result.pruned
    assert len(result.history) == 2


def test_early_stopping_on_val_loss():
    # An lr of 1e-30 leaves the weights as initialised, so val_loss never improves: the first
    # epoch sets the best, the next `patience` epochs are stale.
    es = EarlyStoppingConfig(patience=2, metric="val_loss")
    cfg = TrainConfig(epochs=10, optimizer="sgd", momentum=0.0, lr=1e-30, early_stopping=es)
    result = train_model(DATA, SMALL_MLP, cfg)
    assert result.stopped_early and len(result.history) == 3


def test_early_stopping_on_val_loss_keeps_going_while_it_falls():
    es = EarlyStoppingConfig(patience=1, metric="val_loss")
    result = train_model(DATA, SMALL_MLP, TrainConfig(epochs=4, early_stopping=es))
    losses = [m.val_loss for m in result.history]
    assert losses == sorted(losses, reverse=True)  # falling all the way (lr 1e-3, 4 epochs)
    assert not result.stopped_early and len(result.history) == 4


def test_divergence_raises_training_error():
    # Two ReLU layers explode to inf and then nan within the first epoch at this rate.
    with pytest.raises(TrainingError, match=r"loss became (nan|inf) at epoch 1, batch \d+"):
        train_model(DATA, MLPConfig(), TrainConfig(epochs=3, optimizer="sgd", lr=1e3))


def test_cnn_trains_with_batch_norm_and_odd_batch():
    # 1078 training images with batch 97 leaves a last batch of 11; batch 1077 leaves 1,
    # which BatchNorm cannot train on and the loop must skip.
    cnn = CNNConfig(n_blocks=2, filters=[8, 16], dropout=0.1)
    result = train_model(DATA, cnn, TrainConfig(epochs=3, batch_size=97))
    assert len(result.history) == 3
    assert result.history[-1].val_accuracy > 0.5
    train_model(DATA, cnn, TrainConfig(epochs=1, batch_size=1077))


def test_sgd_nesterov_runs():
    cfg = TrainConfig(epochs=2, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True)
    assert train_model(DATA, SMALL_MLP, cfg).history[-1].val_accuracy > 0.8
