"""Data, optimisers and the epoch loop. Never imports optuna; importing it never imports torch.

``train_model`` is a thin wrapper that imports the torch-based loop on first call, so
``hpo --help`` and spec validation can import this package for free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hpo.training.config import DataConfig, EarlyStoppingConfig, TrainConfig
from hpo.training.metrics import EpochMetrics, Reporter, TrainingResult

if TYPE_CHECKING:
    from hpo.models import ModelConfig

__all__ = [
    "DataConfig",
    "EarlyStoppingConfig",
    "EpochMetrics",
    "Reporter",
    "TrainConfig",
    "TrainingResult",
    "train_model",
]


def train_model(
    data: DataConfig,
    model: ModelConfig,
    train: TrainConfig,
    *,
    device: str = "cpu",
    reporter: Reporter | None = None,
    checkpoints: Any = None,
    stop_requested: Callable[[], bool] | None = None,
) -> TrainingResult:
    """See ``hpo.training.loop.train_model``."""
    from hpo.training.loop import train_model as _train_model

    return _train_model(data, model, train, device=device, reporter=reporter,
                        checkpoints=checkpoints, stop_requested=stop_requested)
