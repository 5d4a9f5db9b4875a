"""What training reports, kept torch-free so the worker/reporter side can import it cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float  # mean training loss over the epoch's batches (smoothed/weighted if set)
    val_loss: float  # mean plain cross-entropy on the validation split, eval mode
    val_accuracy: float  # fraction in [0, 1]
    seconds: float  # wall time of the epoch, training and validation (s/epoch: training only)
    lr: float  # learning rate of the epoch's first batch (schedules may change it per batch)
    # train.record_gradients: layer (module path) -> mean over the epoch's batches of the L2
    # norm of its weight's gradient, input layer first; None when not recorded.
    grad_norms: dict[str, float] | None = None
    # Fraction in [0, 1] of the epoch's training images the model classified right, counted
    # from the predictions of the training batches themselves (the logits the loss was
    # computed from: no extra pass), so in training mode, on augmented images, while the
    # weights move; a trial resumed mid-epoch counts the batches before the stop too (the
    # checkpoint keeps their count). None in checkpoints written before it was recorded.
    train_accuracy: float | None = None


class Reporter(Protocol):
    """How training talks to the tuner without importing it (the worker adapts Optuna's trial)."""

    def report(self, metrics: EpochMetrics) -> bool:
        """Called after every epoch; return True to stop now (the trial was pruned)."""
        ...

    # Optional (looked up with getattr): ``batch(epoch, done, total)``, told the batches done
    # in the epoch a few times a second (hpo.training.loop.BATCH_REPORT_INTERVAL), for live
    # progress; ``resumed(history)``, shown the epochs trained before a checkpoint's restart.


@dataclass
class TrainingResult:
    history: list[EpochMetrics]
    pruned: bool
    stopped_early: bool
    params_trainable: int
    params_total: int
    seconds_per_epoch: float  # training time / epochs trained (validation excluded, as images/s)
    device: str
    seed: int
    # CUDA: torch.cuda.max_memory_allocated during the trial (tensors, the resident dataset
    # included). CPU: the process's peak resident set size so far (ru_maxrss), which covers
    # every earlier trial of the worker too. None where the platform cannot tell.
    peak_memory_mb: float | None
    images_per_second: float  # training images / training time (validation excluded)
    precision: str  # what ran: fp32, bf16 or fp16 (fp16 falls back to fp32 off CUDA)
    # What the data side found and the loss applied: class counts per split (by label),
    # class names, the training loss's class weights (None: unweighted) and unreadable images.
    data_report: dict[str, Any] = field(default_factory=dict)
    # The final (last-epoch) model, for its weights; not the best epoch's. In memory only.
    model: Any = field(default=None, repr=False, compare=False)
    # That model's validation predictions and the true labels, in split order, copied from
    # the last evaluation (no extra pass); None when there was no validation split.
    val_predictions: list[int] | None = field(default=None, repr=False)
    val_targets: list[int] | None = field(default=None, repr=False)
    in_shape: tuple[int, ...] = ()  # (C, H, W) the model takes: to rebuild it for the weights
    class_names: tuple[str, ...] = ()
    # perf_counter when the first optimiser step was done (the trial's start-up ends there).
    first_step_at: float | None = None
