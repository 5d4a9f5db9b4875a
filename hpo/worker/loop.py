"""The worker loop: ask the shared study for a trial, train it, tell the result, repeat
until the study's global budget is spent.

Ask/tell rather than ``study.optimize`` because the budget is global across processes
and machines (``optimize``'s ``n_trials`` counts per process) and because every trial
records what a user compares (curves, parameter count, seconds per epoch, reasons).
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpo.worker.budget import budget_state, is_over_budget
from hpo.artifacts.store import study_store
from hpo.errors import DivergedError, HpoError, Preempted, StorageError, UsageError
from hpo.worker.heartbeat import Watchdog
from hpo.worker.recovery import worker_identity
from hpo.storage.urls import DEFAULT_RECONNECT_TIMEOUT, StorageTarget
from hpo.study.attrs import (
    CONFIG, CPU_THREADS, CURVES, DATA_REPORT, DEVICE, EPOCHS_TRAINED, FAIL_REASON, IMAGES_PER_SECOND,
    OVER_BUDGET, PARAMS_TOTAL, PARAMS_TRAINABLE, PEAK_MEMORY_MB, PRECISION, PRUNED_AT_EPOCH,
    SECONDS_PER_EPOCH, SEED, STARTUP_SECONDS, STOPPED_EARLY, TRACEBACK, VERSIONS, WORKER,
)
from hpo.study.studies import load_study
from hpo.worker.threads import registered_worker, share_cpu

if TYPE_CHECKING:
    from hpo.spec.trial_config import TrialConfig


@dataclass
class TrialOutcome:
    number: int
    state: str  # complete | pruned | fail | steered | preempted
    value: float | None
    epochs: int
    seconds: float
    reason: str | None = None


@dataclass
class WorkerReport:
    outcomes: list[TrialOutcome] = field(default_factory=list)
    stop_reason: str = ""
    exit_code: int = 0


Progress = Callable[[str, dict[str, Any]], None]


def check_device(device: str) -> str:
    """Fail early, in the user's terms, when the device cannot be used."""
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
        raise UsageError(f"unknown device {device!r} (expected cpu, cuda, cuda:N or mps)")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise HpoError(f"device {device} requested but CUDA is not available on this machine")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise HpoError(f"device {device} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def run_worker(
    name: str,
    target: StorageTarget,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str = "cpu",
    rank: int = 0,
    progress: Progress | None = None,
    reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
    trainer: Callable[..., Any] | None = None,
) -> WorkerReport:
    """Run trials of study ``name`` until its budget (or this worker's limits) is spent.

    ``reconnect_timeout``: how long to wait for an unreachable database before giving up.
    ``trainer``: stands in for ``hpo.training.train_model`` (benchmarks time the service alone).
    """
    from hpo.spec.space import max_epochs, space_facts
    from hpo.spec.strategies import build_pruner, build_sampler

    loaded = load_study(name, target, reconnect_for=reconnect_timeout)
    spec = loaded.spec
    study = loaded.study
    study.sampler = build_sampler(spec.sampler, rank=rank, space=space_facts(spec))
    study.pruner = build_pruner(spec.pruner, max_epochs=max_epochs(spec))
    device = check_device(device)
    _warm_up(spec, device)
    emit = progress or (lambda event, data: None)
    grace = _enable_heartbeats(study, spec.budget)
    # Optuna warns on every ask that heartbeats belong to study.optimize: hpo beats its own.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    watchdog = Watchdog(study, max_retries=spec.budget.max_retries,
                        interval=spec.budget.heartbeat_interval, grace_period=grace,
                        sweep_every=spec.budget.heartbeat_grace_period / 2,
                        on_swept=lambda number: emit("swept", {"trial": number}))
    with registered_worker(), stop_on_sigterm() as stop, watchdog:
        watchdog.sweep()  # trials left behind before this worker started
        return _trial_loop(study, spec, n_trials=n_trials, timeout=timeout, device=device,
                           rank=rank, emit=emit, stop=stop, watchdog=watchdog,
                           trainer=trainer)


def _warm_up(spec: Any, device: str) -> None:
    """Pay the one-off costs (torch's import, the fixed dataset) before the first trial, so
    that no trial's start-up or heartbeat includes them."""
    from hpo.training.loop import warm_up

    searched = any(key.startswith("data.") for key in spec.search)
    data = None if searched else spec.data
    try:
        warm_up(data, device)
    except Exception:  # noqa: BLE001 - the first trial meets the same problem and records it
        pass


def _enable_heartbeats(study: Any, budget: Any) -> float | None:
    """Turn on the database's heartbeat bookkeeping with the study's settings; returns the
    grace period, or None where there are no heartbeats (the journal store)."""
    from hpo.storage.optuna_internals import storage_of
    from hpo.storage.proxies import rdb_backend

    rdb = rdb_backend(storage_of(study))
    if rdb is None:
        return None
    # RDBStorage takes these in its constructor, before the study (and its spec) is read.
    rdb.heartbeat_interval = max(1, round(budget.heartbeat_interval))
    rdb.grace_period = max(1, round(budget.heartbeat_grace_period))
    return float(rdb.grace_period)


class StopRequest:
    """Set by SIGTERM: finish the current batch, checkpoint, hand the trial back, exit 0."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[StopRequest]:
    """SIGTERM (preemption, a notebook's time limit, ``docker stop``, the pool parent) asks
    for a stop at the next batch boundary; a second SIGTERM kills at once."""
    import signal
    import threading

    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: Any) -> None:
        stop.signal = "SIGTERM"
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def _trial_loop(study: Any, spec: Any, *, n_trials: int | None, timeout: float | None,
                device: str, rank: int, emit: Progress, stop: StopRequest, watchdog: Watchdog,
                trainer: Callable[..., Any] | None) -> WorkerReport:
    from hpo.storage.optuna_internals import storage_of, trial_id_of
    from hpo.storage.proxies import one_read_of_the_study

    report = WorkerReport()
    started = time.monotonic()
    while True:
        if stop():
            report.stop_reason = f"stopped by {stop.signal}"
            break
        state = budget_state(study, spec.budget)
        if state.stop_reason:
            report.stop_reason = state.stop_reason
            report.exit_code = 0 if state.exhausted else 1
            break
        if n_trials is not None and len(report.outcomes) >= n_trials:
            report.stop_reason = f"--n-trials {n_trials} reached"
            break
        if timeout is not None and time.monotonic() - started >= timeout:
            report.stop_reason = f"--timeout {timeout:g} s reached"
            break
        if device == "cpu":
            share_cpu()  # other workers on this machine may have started or stopped
        asked_at = time.perf_counter()
        with one_read_of_the_study(storage_of(study)):  # see hpo.storage.proxies.OneReadPerTrial
            trial = study.ask()
        watchdog.beat_for(trial_id_of(trial))
        # First thing: who runs it, so that a worker on this host can tell if we die.
        trial.set_user_attr(WORKER, worker_identity(rank))
        try:
            if is_over_budget(study, trial.number, spec.budget):
                _hand_back(study, trial)
                continue
            outcome = run_trial(study, trial, spec, device=device, emit=emit,
                                stop=stop, max_retries=spec.budget.max_retries, trainer=trainer,
                                asked_at=asked_at)
        finally:
            watchdog.beat_for(None)
        report.outcomes.append(outcome)
        emit("trial_end", {"outcome": outcome})
    return report


def _hand_back(study: Any, trial: Any) -> None:
    """Another worker took the last slot first: close this trial without running it."""
    from optuna.trial import TrialState

    from hpo.storage.writes import write_to_trial

    write_to_trial(trial, user_attrs={OVER_BUDGET: True,
                                      FAIL_REASON: "not run: the study's n_trials budget was already taken"})
    study.tell(trial, state=TrialState.FAIL)


def run_trial(study: Any, trial: Any, spec: Any, *, device: str, emit: Progress,
              stop: Callable[[], bool] | None = None, max_retries: int = 0,
              trainer: Callable[..., Any] | None = None, asked_at: float | None = None) -> TrialOutcome:
    """Sample, train and tell one trial; a failure fails the trial, never the worker.
    ``asked_at``: perf_counter before ``ask``, for the trial's ``startup_seconds``."""
    from hpo.storage.optuna_internals import storage_of, trial_id_of
    from hpo.worker.checkpoints import TrialCheckpoints
    from hpo.worker.pruning import TrialReporter

    started = time.monotonic()
    metric = spec.objectives[0].metric  # reported every epoch; the pruner acts on it
    reporter = TrialReporter(study, trial, metric,
                             lambda m: emit("epoch", {"trial": trial.number, "metrics": m, "metric": metric}))
    store = study_store(study)
    checkpoints = (TrialCheckpoints(store, trial, interval=spec.budget.checkpoint_interval)
                   if store is not None else None)
    emit("trial_start", {"trial": trial.number})
    try:
        outcome = _train_and_tell(study, trial, spec, reporter, checkpoints, started, asked_at=asked_at,
                                  device=device, stop=stop, trainer=trainer)
    except Preempted as exc:
        return _preempted(study, trial, reporter, str(exc), started, max_retries)
    except StorageError:  # the database stayed unreachable past --reconnect-timeout
        raise
    except Exception:
        # Another worker judged this trial dead (its heartbeats did not reach the database
        # within the grace period) and failed it: Optuna then refuses every update
        # (UpdateFinishedTrialError, or ValueError from tell). The retry resumes elsewhere.
        if not storage_of(study).get_trial(trial_id_of(trial)).state.is_finished():
            raise
        reason = "taken over: another worker marked it failed and retried it (missed heartbeats)"
        return TrialOutcome(trial.number, "fail", None, len(reporter.history), time.monotonic() - started, reason)
    if checkpoints is not None:
        checkpoints.discard()
    return outcome


def _train_and_tell(study: Any, trial: Any, spec: Any, reporter: Any, checkpoints: Any,
                    started: float, *, asked_at: float | None, device: str,
                    stop: Callable[[], bool] | None,
                    trainer: Callable[..., Any] | None) -> TrialOutcome:
    from optuna.trial import TrialState

    from hpo.artifacts.trial_files import save_trial_artifacts
    from hpo.training import train_model

    objectives = spec.objectives
    metric = objectives[0].metric
    try:
        config = _sample_config(trial, spec, device)
        result = (trainer or train_model)(
            config.data,
            config.model,
            config.train,
            device=device,
            reporter=reporter,
            checkpoints=checkpoints,
            stop_requested=stop,
        )
    except KeyboardInterrupt:
        _fail(study, trial, reporter, "interrupted (SIGINT)")
        raise
    except (Preempted, StorageError):  # not the trial's fault: handled by the caller
        raise
    except DivergedError as exc:
        return _steer_away(study, trial, reporter, str(exc), started, objectives[0])
    except HpoError as exc:  # TrainingError and kin: the reason is already in the user's terms
        return _fail(study, trial, reporter, str(exc), started)
    except Exception as exc:  # a bug or an unusable combination: the study goes on
        from optuna.exceptions import UpdateFinishedTrialError

        if isinstance(exc, UpdateFinishedTrialError):
            raise
        if _is_out_of_memory(exc):
            _free_device_memory()
            reason = f"out of memory at batch_size={trial.params.get('train.batch_size', spec.train.batch_size)}"
            return _steer_away(study, trial, reporter, reason, started, objectives[0])
        reason = f"{type(exc).__name__}: {exc}"
        return _fail(study, trial, reporter, reason, started, error_trace=traceback.format_exc()[-4000:])

    attrs = _result_attrs(reporter, result, asked_at)
    # Before tell: Optuna refuses artifacts for finished trials. Never fails the trial.
    attrs.update(save_trial_artifacts(study, trial, reporter.history, result, spec=spec))
    epochs = len(result.history)
    if result.pruned:
        attrs[PRUNED_AT_EPOCH] = epochs
    reporter.write(attrs)
    if result.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialOutcome(trial.number, "pruned", getattr(reporter.history[-1], metric), epochs, time.monotonic() - started)
    values = objective_values(objectives, result)
    study.tell(trial, values if len(values) > 1 else values[0])
    return TrialOutcome(trial.number, "complete", values[0], epochs, time.monotonic() - started)


def _preempted(study: Any, trial: Any, reporter: Any, reason: str, started: float, max_retries: int) -> TrialOutcome:
    """Hand the trial back: failed with the reason, and retried (from its checkpoint) by
    whichever worker asks next, here or on another machine."""
    from hpo.storage.optuna_internals import storage_of, trial_id_of
    from hpo.worker.recovery import fail_and_retry

    attrs: dict[str, Any] = {EPOCHS_TRAINED: len(reporter.history)}
    if reporter.history:
        attrs[CURVES] = reporter.curves()
    reporter.write(attrs)
    fresh = storage_of(study).get_trial(trial_id_of(trial))  # with the checkpoint attribute just set
    fail_and_retry(study, fresh, reason, max_retries)
    return TrialOutcome(trial.number, "preempted", None, len(reporter.history), time.monotonic() - started, reason)


def objective_values(objectives: list[Any], result: Any) -> list[float]:
    """One value per objective. Per-epoch metrics are taken at the epoch where the first
    objective was best (the epoch one would keep); the others describe the whole trial."""
    first = objectives[0]
    pick = max if first.direction == "maximize" else min
    best_epoch = pick(result.history, key=lambda m: getattr(m, first.metric))
    per_trial = {
        "params": result.params_total,
        "peak_memory_mb": result.peak_memory_mb,
        "seconds_per_epoch": result.seconds_per_epoch,
        "images_per_second": result.images_per_second,
    }
    values = []
    for objective in objectives:
        value = per_trial[objective.metric] if objective.metric in per_trial else getattr(best_epoch, objective.metric)
        if value is None:
            raise HpoError(f"objective {objective.metric} cannot be measured on this platform")
        values.append(float(value))
    return values


def _steer_away(study: Any, trial: Any, reporter: Any, reason: str, started: float, first: Any) -> TrialOutcome:
    """A diverged or out-of-memory trial says something about its region of the space.

    A failed trial teaches Optuna's samplers nothing (TPE ignores it), so the trial is closed
    as pruned with the worst possible value of the first objective one step after the last
    epoch it finished: TPE ranks pruned trials by how far and how well they got, and steers
    away. The reason is recorded as for a failure.
    """
    from optuna.trial import TrialState

    worst = -math.inf if first.direction == "maximize" else math.inf
    epochs = len(reporter.history)
    reporter.record(worst, epochs + 1)
    attrs = {FAIL_REASON: reason, EPOCHS_TRAINED: epochs, PRUNED_AT_EPOCH: epochs}
    if reporter.history:
        attrs[CURVES] = reporter.curves()
    reporter.write(attrs)
    study.tell(trial, state=TrialState.PRUNED)
    return TrialOutcome(trial.number, "steered", None, epochs, time.monotonic() - started, reason)


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


def _free_device_memory() -> None:
    """Release what the failed trial held so the next trial starts clean."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sample_config(trial: Any, spec: Any, device: str) -> TrialConfig:
    """The trial's resolved config. Its parameters are written together with the context
    attributes, in one write (one per parameter made sampling the slowest part of a trial's
    start on PostgreSQL); those sampled before an error are written all the same."""
    from hpo.spec.space import sample_config
    from hpo.storage.optuna_internals import storage_of, trial_storage, trial_storage_as
    from hpo.storage.proxies import one_read_of_the_study
    from hpo.storage.writes import DeferredParams, write_to_trial

    deferred = DeferredParams(trial_storage(trial))
    context: dict[str, Any] = {}
    try:
        with trial_storage_as(trial, deferred):
            with one_read_of_the_study(storage_of(trial.study)):
                config = sample_config(trial, spec)
            context = _context_attrs(config, device)
    finally:
        write_to_trial(trial, params=deferred.params, user_attrs=context)
    return config


def _context_attrs(config: TrialConfig, device: str) -> dict[str, Any]:
    import optuna
    import torch

    import hpo

    return {
        CONFIG: config.to_json(),
        SEED: config.train.seed,
        DEVICE: device,
        CPU_THREADS: torch.get_num_threads(),
        VERSIONS: {"hpo": hpo.__version__, "optuna": optuna.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }


def _result_attrs(reporter: Any, result: Any, asked_at: float | None) -> dict[str, Any]:
    attrs = {
        PARAMS_TRAINABLE: result.params_trainable,
        PARAMS_TOTAL: result.params_total,
        SECONDS_PER_EPOCH: round(result.seconds_per_epoch, 4),
        IMAGES_PER_SECOND: round(result.images_per_second, 1),
        PEAK_MEMORY_MB: result.peak_memory_mb and round(result.peak_memory_mb, 1),
        PRECISION: result.precision,
        DATA_REPORT: result.data_report,
        EPOCHS_TRAINED: len(result.history),
        STOPPED_EARLY: result.stopped_early,
        CURVES: reporter.curves(),
    }
    if result.first_step_at is not None and asked_at is not None:
        # From ask to the first optimiser step: sampling, storage, data, model, optimiser.
        attrs[STARTUP_SECONDS] = round(result.first_step_at - asked_at, 4)
    return attrs


def _fail(study: Any, trial: Any, reporter: Any, reason: str, started: float | None = None,
          error_trace: str | None = None) -> TrialOutcome:
    from optuna.trial import TrialState

    attrs: dict[str, Any] = {FAIL_REASON: reason, EPOCHS_TRAINED: len(reporter.history)}
    if error_trace is not None:
        attrs[TRACEBACK] = error_trace
    if reporter.history:
        from hpo.artifacts.trial_files import save_trial_artifacts

        attrs[CURVES] = reporter.curves()
        attrs.update(save_trial_artifacts(study, trial, reporter.history))  # the curve of what it reached
    reporter.write(attrs)
    study.tell(trial, state=TrialState.FAIL)
    elapsed = time.monotonic() - started if started is not None else 0.0
    return TrialOutcome(trial.number, "fail", None, len(reporter.history), elapsed, reason)


