"""The epoch loop over device-side batch sources.

No per-batch host synchronisation: the loss of every batch stays on the device and is read
back once per epoch, which is also when a NaN/inf loss is detected; the lr schedule, gradient
clipping and augmentation run on the device or in host bookkeeping. (fp16's GradScaler is the
exception: torch checks its inf/NaN flag on the host at every step.)

A trial is a few named steps: ``_build`` (model, optimiser, loss, schedule), ``_resume`` (from
the last checkpoint, if any), ``_Epochs.run`` once per epoch (train, validate, record), and
``_result`` (what the trial reports).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpo.errors import DivergedError, Preempted, TrainingError
from hpo.models import ModelConfig, count_parameters, create_model
from hpo.models.init import weight_layers
from hpo.training.augment_ops import build_augment
from hpo.training.batches import BatchSource, batch_bounds
from hpo.training.checkpoint import Checkpoints, Position, Progress, restore, snapshot
from hpo.training.config import DataConfig, EarlyStoppingConfig, TrainConfig
from hpo.training.data import Splits, load_splits
from hpo.training.factories import loss_from_config, optimizer_from_config, schedule_from_config
from hpo.training.losses import Loss
from hpo.training.metrics import EpochMetrics, Reporter, TrainingResult
from hpo.training.runtime import (
    MemoryMeter,
    Precision,
    deterministic_mode,
    resolve_precision,
    use_channels_last,
)
from hpo.training.schedules import Schedule

MIN_EVAL_BATCH = 256  # validation batches are 2x the training batch (no activations kept)

__all__ = ["EpochMetrics", "Reporter", "TrainingResult", "evaluate_model", "train_final", "train_model"]

# Predictions and true labels of the last validation pass, still on the device.
_Predictions = tuple[torch.Tensor, torch.Tensor]


class _GradNorms:
    """``train.record_gradients``: per layer, the L2 norm of its weight's gradient at every
    step, averaged over the epoch's batches.

    The mean of per-step norms rather than the norm of the epoch's summed gradient: a layer's
    gradient vanishes or explodes at every step, and steps whose directions cancel would make
    the summed one look small when it is not. Before clipping (what backpropagation delivered)
    and unscaled under fp16; a step whose gradient overflowed (fp16 skips it) is left out.
    Sums stay on the device: per step, one norm per layer and two adds, no host sync; the
    host reads them once an epoch, after the epoch's own sync.
    """

    def __init__(self, net: nn.Module):
        # Trainable Linear and Conv weights, in the order the model declares them (input
        # first for hpo's families); a frozen backbone's layers get no gradient.
        self.layers = [(name, module.weight) for name, module in weight_layers(net)
                       if module.weight.requires_grad]
        self.sums: torch.Tensor | None = None
        self.steps: torch.Tensor | None = None

    @classmethod
    def of(cls, net: nn.Module) -> _GradNorms | None:
        """The recorder of ``net``; None for a model without a trainable Linear or Conv layer
        (a custom LSTM or embedding model, or a fully frozen one): nothing to record, and
        every epoch's ``grad_norms`` stays None as when recording is off."""
        recorder = cls(net)
        return recorder if recorder.layers else None

    def add(self) -> None:
        norms = torch.stack([torch.linalg.vector_norm(w.grad.float()) if w.grad is not None
                             else torch.zeros((), device=w.device) for _, w in self.layers])
        finite = torch.isfinite(norms)
        if self.sums is None or self.steps is None:
            self.sums, self.steps = torch.zeros_like(norms), torch.zeros_like(norms)
        self.sums += torch.where(finite, norms, 0.0)
        self.steps += finite

    def take(self) -> dict[str, float]:
        """The epoch's means (NaN for a layer without one finite step), and start afresh.
        A trial resumed mid-epoch averages the batches trained since the restart."""
        if self.sums is None or self.steps is None:
            return {}
        means = (self.sums / self.steps).tolist()  # 0 / 0 is NaN: no finite step
        self.sums = self.steps = None
        return {name: mean for (name, _), mean in zip(self.layers, means)}


@dataclass
class _Run:
    """What every step of one trial needs, built once in ``train_model``."""

    net: nn.Module
    params: list[nn.Parameter]  # the trainable ones
    opt: torch.optim.Optimizer
    loss: Loss
    schedule: Schedule
    precision: Precision
    scaler: torch.amp.GradScaler | None
    grad_clip: float | None
    augment: Callable[[torch.Tensor], torch.Tensor] | None
    channels_last: bool
    grad_norms: _GradNorms | None = None  # train.record_gradients
    first_step_at: float | None = None  # perf_counter when the first optimiser step was done

    def inputs(self, x: torch.Tensor, *, train: bool) -> torch.Tensor:
        if train and self.augment is not None:
            x = self.augment(x)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def eval_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.inputs(x, train=False)

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self._gradients_ready()
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            if self.grad_clip is not None or self.grad_norms is not None:
                self.scaler.unscale_(self.opt)  # clip and record the true gradients, not the scaled ones
            self._gradients_ready()
            self.scaler.step(self.opt)
            self.scaler.update()
        self.schedule.after_batch()
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()

    def _gradients_ready(self) -> None:
        """Between backward and the optimiser step: record the norms, then clip."""
        if self.grad_norms is not None:
            self.grad_norms.add()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)


#: Seconds between two reports of the batches done (live progress needs a few a second).
BATCH_REPORT_INTERVAL = 0.25


class _BatchTicker:
    """Tells a reporter's ``batch(epoch, done, total)`` the batches done, at most every
    BATCH_REPORT_INTERVAL seconds: per batch, one clock read and a comparison (no device
    sync, nothing allocated worth measuring: BENCHMARKS.md)."""

    def __init__(self, report: Callable[[int, int, int], None]):
        self.report = report
        self.epoch = self.total = 0
        self.due = 0.0

    def start(self, epoch: int, total: int) -> None:
        self.epoch, self.total, self.due = epoch, total, 0.0  # the first batch is reported

    def tick(self, done: int) -> None:
        now = time.perf_counter()
        if now >= self.due:
            self.due = now + BATCH_REPORT_INTERVAL
            self.report(self.epoch, done, self.total)


def _batch_ticker(reporter: Reporter | None) -> _BatchTicker | None:
    """The ticker of a reporter that watches batches (an optional ``batch`` method)."""
    report = getattr(reporter, "batch", None)
    return _BatchTicker(report) if callable(report) else None


class _StopAtBatch(Exception):
    """Raised inside an epoch at a batch boundary when the worker was asked to stop."""

    def __init__(self, position: Position):
        self.position = position


def _train_epoch(
    run: _Run,
    source: BatchSource,
    batch_size: int,
    gen: torch.Generator,
    epoch: int,
    *,
    resume: Position | None = None,
    stop_requested: Callable[[], bool] | None = None,
    on_batch: _BatchTicker | None = None,
) -> tuple[float, int, float]:
    """One pass over the shuffled training split: (mean training loss, images seen, train
    accuracy). The accuracy counts the argmax of the logits the loss was computed from, on
    the device (no extra pass, no sync); a stop mid-epoch keeps the count with the losses.

    ``resume``: the batches of this epoch already done before a restart (skipped here).
    ``stop_requested`` is checked after every batch; when it says so, _StopAtBatch carries
    the position reached. ``on_batch`` is told the batches done, a few times a second."""
    run.net.train()
    started = time.perf_counter()
    done = resume or Position(epoch=epoch - 1)
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    correct = torch.zeros((), dtype=torch.int64, device=run.params[0].device)
    if on_batch is not None:
        on_batch.start(epoch, len(batch_bounds(len(source), batch_size, train=True)))
    for x, y in source.batches(batch_size, generator=gen, train=True, skip=done.batch):
        with run.precision.autocast():
            logits = run.net(run.inputs(x, train=True))
            loss = run.loss(logits, y)
        run.step(loss)
        losses.append(loss.detach())
        correct += (logits.detach().argmax(dim=1) == y).sum()
        sizes.append(len(y))
        if on_batch is not None:
            on_batch.tick(done.batch + len(sizes))
        if stop_requested is not None and stop_requested():
            raise _StopAtBatch(Position(
                epoch=epoch - 1,
                batch=done.batch + len(sizes),
                losses=done.losses + torch.stack(losses).float().cpu().tolist(),
                sizes=done.sizes + sizes,
                seconds=done.seconds + time.perf_counter() - started,
                correct=done.correct + int(correct),  # a sync, at a stop only
            ))
    if not losses and not done.sizes:
        raise TrainingError(f"the training split is empty (epoch {epoch})")
    # The one sync of the epoch: the batch losses and the correct count in one copy (a count
    # in float32 is exact up to 2**24 images an epoch).
    current = torch.cat([torch.stack(losses).float(), correct.float().reshape(1)]).cpu() if losses \
        else torch.zeros(1)
    sizes = done.sizes + sizes
    accuracy = (done.correct + float(current[-1])) / sum(sizes)
    losses_host = torch.cat([torch.tensor(done.losses, dtype=torch.float32), current[:-1]])
    return _mean_loss(losses_host, sizes, epoch), sum(sizes), accuracy


def _mean_loss(losses: torch.Tensor, sizes: list[int], epoch: int) -> float:
    """The epoch's loss, each batch weighted by its size; checked here because this is the
    first time the host sees the batch losses."""
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        b = int(bad[0])
        raise DivergedError(f"loss became {losses[b].item()} at epoch {epoch}, batch {b + 1}")
    weights = torch.tensor(sizes, dtype=losses.dtype)
    return float((losses * weights).sum() / weights.sum())


@torch.no_grad()
def _evaluate(
    net: nn.Module,
    source: BatchSource,
    batch_size: int,
    *,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    empty_message: str = "the validation split is empty",
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """(mean plain cross-entropy, accuracy, predictions, targets) in eval mode.

    Sums and predictions stay on the device; the predictions reuse the accuracy's argmax, so
    keeping them costs no extra pass (the caller copies the last epoch's to the host once).
    ``autocast`` and ``prepare`` are the trial's precision and input layout; a model
    evaluated outside a trial (``evaluate_model``) runs in fp32 on the batches as they come.
    """
    net.eval()
    loss_sums: list[torch.Tensor] = []
    preds: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    n = 0
    for x, y in source.batches(batch_size):
        with autocast():
            logits = net(x if prepare is None else prepare(x))
        loss_sums.append(F.cross_entropy(logits.float(), y, reduction="sum"))
        preds.append(logits.argmax(dim=1))
        targets.append(y)
        n += len(y)
    if n == 0:
        raise TrainingError(empty_message)
    pred, target = torch.cat(preds), torch.cat(targets)
    totals = torch.stack([torch.stack(loss_sums).sum(), (pred == target).sum().float()])
    loss, acc = totals.tolist()  # the one sync of the validation pass
    return loss / n, acc / n, pred, target


class _EarlyStopping:
    def __init__(self, cfg: EarlyStoppingConfig):
        self.cfg = cfg
        self.sign = 1.0 if cfg.metric == "val_accuracy" else -1.0  # compare as "higher is better"
        self.best, self.stale = -math.inf, 0

    @property
    def state(self) -> tuple[float, int]:
        return self.best, self.stale

    def should_stop(self, metrics: EpochMetrics) -> bool:
        value = self.sign * getattr(metrics, self.cfg.metric)
        if value > self.best + self.cfg.min_delta:
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        return self.stale >= self.cfg.patience


def _augment_seed(seed: int) -> int:
    """A seed for the augmentation generator whose stream is unrelated to the shuffling's."""
    return int.from_bytes(hashlib.sha256(f"augment:{seed}".encode()).digest()[:8], "little") >> 1


def _build(
    data: DataConfig, model: ModelConfig, train: TrainConfig, splits: Splits, device: torch.device
) -> _Run:
    torch.manual_seed(train.seed)  # model init and dropout
    net = create_model(model, splits.in_shape, splits.num_classes).to(device)
    channels_last = use_channels_last(train.channels_last, device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)  # 4-D (conv) weights only
    params = [p for p in net.parameters() if p.requires_grad]  # a frozen backbone's are not
    if not params:
        raise TrainingError("the model has no trainable parameters (is everything frozen?)")
    opt = optimizer_from_config(params, train)
    steps_per_epoch = len(batch_bounds(len(splits.train), train.batch_size, train=True))
    precision = resolve_precision(train.precision, device)
    return _Run(
        net=net,
        params=params,
        opt=opt,
        loss=loss_from_config(train, splits.train.labels, splits.num_classes, device),
        schedule=schedule_from_config(opt, train, steps_per_epoch),
        precision=precision,
        scaler=precision.scaler(),
        grad_clip=train.grad_clip,
        augment=build_augment(
            data.augment,
            in_shape=splits.in_shape,
            mean=splits.mean,
            std=splits.std,
            seed=_augment_seed(train.seed),
        ),
        channels_last=channels_last,
        grad_norms=_GradNorms.of(net) if train.record_gradients else None,
    )


def _resume(
    run: _Run,
    gen: torch.Generator,
    checkpoints: Checkpoints | None,
    early: _EarlyStopping | None,
    reporter: Reporter | None,
) -> tuple[Position, Progress, bool]:
    """Where the run starts and what it has done so far: the checkpoint's state put back into
    ``run``, ``gen`` and ``early`` when the store holds one (the third value says so), else
    the very beginning. The reporter is shown the epochs before the restart, not asked to
    judge them: they were judged when they ran."""
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is None:
        return Position(), Progress(history=[]), False
    position, progress = restore(run, gen, saved)
    if early is not None and progress.early_stopping is not None:
        early.best, early.stale = progress.early_stopping
    if reporter is not None and hasattr(reporter, "resumed"):
        reporter.resumed(progress.history)
    return position, progress, True


@dataclass
class _Epochs:
    """What the epochs of one run share, and the two things they do: run and save."""

    run: _Run
    splits: Splits
    batch_size: int
    gen: torch.Generator  # shuffling, independent of init
    progress: Progress
    early: _EarlyStopping | None
    checkpoints: Checkpoints | None
    stop_requested: Callable[[], bool] | None
    on_batch: _BatchTicker | None = None

    def stopping(self) -> bool:
        return self.stop_requested is not None and self.stop_requested()

    def save(self, shuffle_state: torch.Tensor, where: Position) -> bool:
        """Save the state at ``where``; False when there is no store to save it in."""
        if self.checkpoints is None:
            return False
        self.progress.early_stopping = self.early.state if self.early is not None else None
        state = snapshot(self.run, shuffle_state=shuffle_state, position=where, progress=self.progress)
        self.checkpoints.save(state)
        return True

    def run_epoch(self, epoch: int, position: Position) -> tuple[EpochMetrics, _Predictions | None]:
        """Train (the rest of) ``epoch``, validate, record; a stop request mid-epoch saves
        the batch reached and raises Preempted."""
        epoch_start_rng = self.gen.get_state()  # redraws this epoch's permutation on resume
        lr = self.run.schedule.lr
        resume = position if position.batch else None
        t0 = time.perf_counter() - (resume.seconds if resume else 0.0)
        try:
            train_loss, seen, train_acc = _train_epoch(self.run, self.splits.train, self.batch_size, self.gen,
                                            epoch, resume=resume, stop_requested=self.stop_requested,
                                            on_batch=self.on_batch)
        except _StopAtBatch as stop:
            saved_now = self.save(epoch_start_rng, stop.position)
            raise Preempted(epoch, stop.position.batch, checkpointed=saved_now) from None
        t1 = time.perf_counter()  # after the epoch's sync, so device time is included
        predictions = None
        if self.splits.val is not None:
            val_loss, val_acc, pred, target = _evaluate(
                self.run.net, self.splits.val, max(MIN_EVAL_BATCH, 2 * self.batch_size),
                autocast=self.run.precision.autocast, prepare=self.run.eval_inputs,
            )
            predictions = (pred, target)
        else:  # retraining on train+val: no validation; plateau steps on the training loss
            val_loss, val_acc = train_loss, math.nan
        grad_norms = self.run.grad_norms.take() if self.run.grad_norms is not None else None
        metrics = EpochMetrics(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                               val_accuracy=val_acc, seconds=time.perf_counter() - t0, lr=lr,
                               grad_norms=grad_norms, train_accuracy=train_acc)
        self.progress.images += seen
        self.progress.train_seconds += t1 - t0
        self.progress.history.append(metrics)
        self.run.schedule.after_epoch(metrics)
        return metrics, predictions


def train_model(
    data: DataConfig,
    model: ModelConfig,
    train: TrainConfig,
    *,
    device: str = "cpu",
    reporter: Reporter | None = None,
    checkpoints: Checkpoints | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> TrainingResult:
    """Train ``model`` on ``data`` as ``train`` says, reporting after every epoch.

    Stops when ``reporter.report`` returns True (pruned), when early stopping's patience
    runs out, or after ``train.epochs``. Raises TrainingError on a non-finite loss.

    ``checkpoints``: resumes from the state it holds, if any, and saves the state after an
    epoch when it says one is due. ``stop_requested``: checked after every batch; when true,
    the state is saved (if there is a store) and Preempted is raised.
    """
    dev = torch.device(device)
    splits = load_splits(data, dev)
    memory = MemoryMeter(dev)  # after loading: every trial's peak includes the cached data
    with deterministic_mode(train.deterministic, dev):
        return _train(data, model, train, splits, dev, memory, reporter, device,
                      checkpoints=checkpoints, stop_requested=stop_requested)


def _train(
    data: DataConfig,
    model: ModelConfig,
    train: TrainConfig,
    splits: Splits,
    dev: torch.device,
    memory: MemoryMeter,
    reporter: Reporter | None,
    device_name: str,
    *,
    checkpoints: Checkpoints | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> TrainingResult:
    run = _build(data, model, train, splits, dev)
    gen = torch.Generator().manual_seed(train.seed)  # shuffling, independent of init
    early = _EarlyStopping(train.early_stopping) if train.early_stopping else None
    position, progress, resumed = _resume(run, gen, checkpoints, early, reporter)
    epochs = _Epochs(run, splits, train.batch_size, gen, progress, early, checkpoints, stop_requested,
                     _batch_ticker(reporter))
    pruned = stopped_early = False
    predictions: _Predictions | None = None
    # Whether the store holds the state at ``position``: saves after an epoch are paced
    # (``Checkpoints.due``), a stop between epochs saves what is not yet there.
    position_saved = resumed
    for epoch in range(position.epoch + 1, train.epochs + 1):
        if epochs.stopping():
            saved_now = position_saved or (position.epoch > 0 and epochs.save(gen.get_state(), position))
            raise Preempted(epoch, 0, checkpointed=saved_now)
        metrics, predictions = epochs.run_epoch(epoch, position)
        position = Position(epoch=epoch)
        if reporter is not None and reporter.report(metrics):
            pruned = True
            break
        if early is not None and early.should_stop(metrics):
            stopped_early = True
            break
        position_saved = epoch < train.epochs and checkpoints is not None and checkpoints.due()
        if position_saved:
            epochs.save(gen.get_state(), position)
    return _result(run, splits, progress, pruned=pruned, stopped_early=stopped_early,
                   predictions=predictions, seed=train.seed, memory=memory, device_name=device_name)


def _result(
    run: _Run,
    splits: Splits,
    progress: Progress,
    *,
    pruned: bool,
    stopped_early: bool,
    predictions: _Predictions | None,
    seed: int,
    memory: MemoryMeter,
    device_name: str,
) -> TrainingResult:
    """What the trial reports: its curves and outcome, what the user compares trials by (size,
    memory, speed), what the data side found, and the final model with its predictions."""
    trainable, total = count_parameters(run.net)
    history = progress.history
    seconds = progress.train_seconds
    return TrainingResult(
        history=history,
        pruned=pruned,
        stopped_early=stopped_early,
        params_trainable=trainable,
        params_total=total,
        # One definition for both speeds: the training pass (validation excluded, whose cost
        # is the validation split's, not the model's), so images/s × s/epoch = images/epoch.
        seconds_per_epoch=seconds / len(history),
        device=str(device_name),
        seed=seed,
        peak_memory_mb=memory.peak_mb(),
        images_per_second=progress.images / seconds if seconds > 0 else 0.0,
        precision=run.precision.name,
        data_report={
            "class_counts": splits.class_counts,
            "class_names": list(splits.class_names),
            "class_weights": run.loss.class_weights,  # what the loss applied; None: unweighted
            "skipped_images": len(splits.skipped),
            # The first few paths say what went wrong; the whole list is in the worker's log.
            "skipped_examples": dict(list(splits.skipped.items())[:20]),
        },
        model=run.net,
        val_predictions=predictions[0].cpu().tolist() if predictions else None,
        val_targets=predictions[1].cpu().tolist() if predictions else None,
        in_shape=tuple(splits.in_shape),
        class_names=tuple(splits.class_names),
        first_step_at=run.first_step_at,
    )


def warm_up(data: DataConfig | None, device: str = "cpu") -> None:
    """What the first trial of a worker would otherwise pay once: the dataset, when the spec
    fixes it (``data`` None: searched, nothing to prepare), and torch's lazily imported
    optimiser machinery (the first optimiser built in a process imports torch._dynamo;
    BENCHMARKS.md has what that costs)."""
    dev = torch.device(device)
    if data is not None:
        load_splits(data, dev)
    weight = nn.Parameter(torch.zeros(1, device=dev))
    opt = torch.optim.Adam([weight])
    weight.sum().backward()
    opt.step()


def train_final(
    data: DataConfig,
    model: ModelConfig,
    train: TrainConfig,
    splits: Splits,
    *,
    device: str = "cpu",
    reporter: Reporter | None = None,
) -> TrainingResult:
    """Train on ``splits.train`` for all of ``train.epochs``: the retraining of a chosen config.

    ``splits.val`` is None (validation is part of the training data), so there is no early
    stopping and no validation metric; a ``plateau`` schedule steps on the training loss.
    ``reporter`` only watches: its answer is ignored, nothing is pruned.
    """
    train = train.model_copy(update={"early_stopping": None, "plateau_metric": "val_loss"})
    dev = torch.device(device)
    memory = MemoryMeter(dev)

    with deterministic_mode(train.deterministic, dev):
        return _train(data, model, train, splits, dev, memory, _Watching(reporter), device)


class _Watching:
    """Passes epochs on to a reporter but never stops training (retraining has no pruning)."""

    def __init__(self, reporter: Reporter | None):
        self.reporter = reporter

    def report(self, metrics: EpochMetrics) -> bool:
        if self.reporter is not None:
            self.reporter.report(metrics)
        return False


def evaluate_model(
    net: nn.Module, source: BatchSource, *, batch_size: int = MIN_EVAL_BATCH
) -> tuple[float, float, list[int], list[int]]:
    """(mean cross-entropy, accuracy, predictions, targets) of ``net`` on ``source``, fp32:
    the loop's own validation pass, so a retrained model's numbers mean what a trial's do."""
    loss, acc, pred, target = _evaluate(net, source, batch_size,
                                        empty_message="cannot evaluate on an empty split")
    return loss, acc, pred.cpu().tolist(), target.cpu().tolist()
