"""One trial's life: sample its configuration, train it, and end it in exactly one way.

A failure of the trial (a bug, an unusable combination, a diverged loss, out of memory) ends
the trial, never the worker; a stop request or a lost database ends the worker's part in it
and hands it back. Each ending is a method of :class:`TrialRun`, named after its
:class:`Outcome`, and writes what that ending records in one write before telling Optuna.
"""

from __future__ import annotations

import math
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from hpo.artifacts.store import study_store
from hpo.errors import Aborted, DivergedError, HpoError, Preempted, StorageError
from hpo.study.attrs import (
    CONFIG,
    CPU_THREADS,
    CURVES,
    DATA_REPORT,
    DEVICE,
    EPOCHS_TRAINED,
    FAIL_REASON,
    GRAD_NORMS,
    IMAGES_PER_SECOND,
    PARAMS_TOTAL,
    PARAMS_TRAINABLE,
    PEAK_MEMORY_MB,
    PRECISION,
    PRUNED_AT_EPOCH,
    SECONDS_PER_EPOCH,
    SEED,
    STARTUP_SECONDS,
    STOPPED_EARLY,
    TRACEBACK,
    VERSIONS,
)

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import Trial, TrialState

    from hpo.spec.model import Objective, Spec
    from hpo.spec.trial_config import TrialConfig
    from hpo.training import TrainingResult
    from hpo.worker.signals import StopRequest

Progress = Callable[[str, dict[str, Any]], None]
Trainer = Callable[..., "TrainingResult"]


class Outcome(StrEnum):
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"
    STEERED = "steered"  # diverged or out of memory: closed as pruned with the worst value
    PREEMPTED = "preempted"  # handed back on SIGTERM or SIGINT, to be resumed from its checkpoint


@dataclass
class TrialOutcome:
    number: int
    state: Outcome
    value: float | None
    epochs: int
    seconds: float
    reason: str | None = None


class TrialRun:
    """Everything one trial's life needs, asked for once; ``run()`` lives it.

    ``asked_at``: ``perf_counter`` before ``ask``, for the trial's ``startup_seconds``;
    ``trainer`` stands in for ``hpo.training.train_model`` (benchmarks time the service alone).
    """

    def __init__(self, study: Study, trial: Trial, spec: Spec, *, device: str, emit: Progress,
                 stop: StopRequest | None = None, trainer: Trainer | None = None,
                 asked_at: float | None = None):
        from hpo.worker.checkpoints import TrialCheckpoints
        from hpo.worker.pruning import TrialReporter

        self.study, self.trial, self.spec = study, trial, spec
        self.device, self.emit, self.stop, self.trainer = device, emit, stop, trainer
        self.asked_at = asked_at
        self.started = time.monotonic()
        self.objectives = spec.objectives
        metric = self.objectives[0].metric  # reported every epoch; the pruner acts on it
        self.reporter = TrialReporter(
            study, trial, metric,
            lambda m: emit("epoch", {"trial": trial.number, "metrics": m, "metric": metric}),
            lambda epoch, done, total: emit("batch", {"trial": trial.number, "epoch": epoch,
                                                      "batch": done, "batches": total}))
        store = study_store(study)
        self.checkpoints = (TrialCheckpoints(store, trial, interval=spec.budget.checkpoint_interval)
                            if store is not None else None)

    # ------------------------------------------------------------------ the life

    def run(self) -> TrialOutcome:
        try:
            outcome = self._train_and_end()
        except Preempted as exc:  # the first stop signal
            return self.preempted(str(exc.by_signal(self.stop.signal if self.stop else None)))
        except KeyboardInterrupt as exc:  # a second one (Aborted), or a Ctrl-C nothing handles
            note = self.abandoned(str(exc) if isinstance(exc, Aborted) else "interrupted")
            if isinstance(exc, Aborted):
                exc.outcome = note
            raise
        except StorageError:  # the database stayed unreachable past --reconnect-timeout
            raise
        except Exception:
            # Another worker judged this trial dead (its heartbeats did not reach the database
            # within the grace period) and failed it: Optuna then refuses every update
            # (UpdateFinishedTrialError, or ValueError from tell). The retry resumes elsewhere.
            if not self._finished_elsewhere():
                raise
            return self.taken_over()
        if self.checkpoints is not None:
            self.checkpoints.discard()
        return outcome

    def _train_and_end(self) -> TrialOutcome:
        try:
            config = self._sample()
            self._announce(config)
            result = self._train(config)
        except (Preempted, StorageError):  # not the trial's fault: handled by run()
            raise
        except DivergedError as exc:
            return self.steer_away(str(exc))
        except HpoError as exc:  # TrainingError and kin: the reason is already in the user's terms
            return self.fail(failure_reason(exc))
        except Exception as exc:  # a bug or an unusable combination: the study goes on
            from optuna.exceptions import UpdateFinishedTrialError

            if isinstance(exc, UpdateFinishedTrialError):
                raise
            if _is_out_of_memory(exc):
                _free_device_memory()
                batch_size = self.trial.params.get("train.batch_size", self.spec.train.batch_size)
                return self.steer_away(f"out of memory at batch_size={batch_size}")
            return self.fail(failure_reason(exc), error_trace=traceback.format_exc()[-4000:])
        return self.pruned(result) if result.pruned else self.complete(result)

    def _sample(self) -> TrialConfig:
        """The trial's resolved config. Its parameters are written together with the context
        attributes, in one write (one per parameter made sampling the slowest part of a
        trial's start on PostgreSQL); those sampled before an error are written all the same."""
        from hpo.spec.space import sample_config
        from hpo.storage.optuna_internals import storage_of, trial_storage, trial_storage_as
        from hpo.storage.proxies import one_read_of_the_study
        from hpo.storage.writes import DeferredParams, write_to_trial

        deferred = DeferredParams(trial_storage(self.trial))
        context: dict[str, Any] = {}
        try:
            with trial_storage_as(self.trial, deferred):
                with one_read_of_the_study(storage_of(self.study)):
                    config = sample_config(self.trial, self.spec)
                context = _context_attrs(config, self.device)
        finally:
            write_to_trial(self.trial, params=deferred.params, user_attrs=context)
        return config

    def _announce(self, config: TrialConfig) -> None:
        """``trial_start``, once its values are known: the searched ones and the epochs."""
        first = self.objectives[0]
        self.emit("trial_start", {"trial": self.trial.number, "params": dict(self.trial.params),
                                  "epochs": config.train.epochs, "metric": first.metric,
                                  "direction": first.direction})

    def _train(self, config: TrialConfig) -> TrainingResult:
        from hpo.training import train_model

        self.reporter.final_epoch = config.train.epochs
        return (self.trainer or train_model)(
            config.data, config.model, config.train, device=self.device, reporter=self.reporter,
            checkpoints=self.checkpoints, stop_requested=self.stop)

    def _finished_elsewhere(self) -> bool:
        from hpo.storage.optuna_internals import storage_of, trial_id_of

        return storage_of(self.study).get_trial(trial_id_of(self.trial)).state.is_finished()

    # ------------------------------------------------------------------ the endings

    def complete(self, result: TrainingResult) -> TrialOutcome:
        self._write_results(result)
        values = objective_values(self.objectives, result)
        self._tell(values if len(values) > 1 else values[0])
        return self._outcome(Outcome.COMPLETE, values[0], len(result.history))

    def pruned(self, result: TrainingResult) -> TrialOutcome:
        from optuna.trial import TrialState

        epochs = len(result.history)
        self._write_results(result, {PRUNED_AT_EPOCH: epochs})
        self._tell(state=TrialState.PRUNED)
        value = getattr(self.reporter.history[-1], self.objectives[0].metric)
        return self._outcome(Outcome.PRUNED, value, epochs)

    def fail(self, reason: str, *, error_trace: str | None = None) -> TrialOutcome:
        from optuna.trial import TrialState

        attrs: dict[str, Any] = {FAIL_REASON: reason, **self._progress_attrs()}
        if error_trace is not None:
            attrs[TRACEBACK] = error_trace
        if self.reporter.history:
            from hpo.artifacts.trial_files import save_trial_artifacts

            attrs.update(save_trial_artifacts(self.study, self.trial, self.reporter.history))  # the curve it reached
        self.reporter.write(attrs)
        self._tell(state=TrialState.FAIL)
        return self._outcome(Outcome.FAIL, None, len(self.reporter.history), reason)

    def steer_away(self, reason: str) -> TrialOutcome:
        """A diverged or out-of-memory trial says something about its region of the space.

        A failed trial teaches Optuna's samplers nothing (TPE ignores it), so the trial is
        closed as pruned with the worst possible value of the first objective one step after
        the last epoch it finished: TPE ranks pruned trials by how far and how well they got,
        and steers away. The reason is recorded as for a failure.
        """
        from optuna.trial import TrialState

        first = self.objectives[0]
        worst = -math.inf if first.direction == "maximize" else math.inf
        epochs = len(self.reporter.history)
        self.reporter.record(worst, epochs + 1)
        self.reporter.write({FAIL_REASON: reason, **self._progress_attrs(), PRUNED_AT_EPOCH: epochs})
        self._tell(state=TrialState.PRUNED)
        return self._outcome(Outcome.STEERED, None, epochs, reason)

    def preempted(self, reason: str) -> TrialOutcome:
        """Hand the trial back: failed with the reason, and retried (from its checkpoint) by
        whichever worker asks next, here or on another machine."""
        from hpo.storage.optuna_internals import storage_of, trial_id_of
        from hpo.worker.recovery import fail_and_retry

        self.reporter.write(self._progress_attrs())
        fresh = storage_of(self.study).get_trial(trial_id_of(self.trial))  # with the checkpoint just set
        fail_and_retry(self.study, fresh, reason, self.spec.budget.max_retries)
        return self._outcome(Outcome.PREEMPTED, None, len(self.reporter.history), reason)

    def abandoned(self, reason: str) -> str:
        """Aborted: handed back at once, without saving a checkpoint (the retry resumes from
        the last one saved). Returns what became of the trial, for the worker's last line."""
        return abandon(self.study, self.trial, reason, self.spec.budget.max_retries)

    def taken_over(self) -> TrialOutcome:
        """Nothing to write: the trial is already failed and retried by another worker."""
        reason = "taken over: another worker marked it failed and retried it (missed heartbeats)"
        return self._outcome(Outcome.FAIL, None, len(self.reporter.history), reason)

    # ------------------------------------------------------------------ what endings share

    def _tell(self, values: float | list[float] | None = None, *, state: TrialState | None = None) -> None:
        """``study.tell``, without its read of the finished trial (hpo.storage.optuna_internals.tell)."""
        from hpo.storage.optuna_internals import tell

        tell(self.study, self.trial, values, state=state)

    def _progress_attrs(self) -> dict[str, Any]:
        """How far the trial got: its epochs and, if it trained any, its curves."""
        attrs: dict[str, Any] = {EPOCHS_TRAINED: len(self.reporter.history)}
        if self.reporter.history:
            attrs[CURVES] = self.reporter.curves()
            attrs.update(self._gradient_attrs())
        return attrs

    def _gradient_attrs(self) -> dict[str, Any]:
        """The gradient norms beside the curves, when train.record_gradients recorded them."""
        norms = self.reporter.grad_norms()
        return {GRAD_NORMS: norms} if norms is not None else {}

    def _write_results(self, result: TrainingResult, extra: dict[str, Any] | None = None) -> None:
        from hpo.artifacts.trial_files import save_trial_artifacts

        attrs = _result_attrs(self.reporter.curves(), result, self.asked_at)
        attrs.update(self._gradient_attrs())
        # Before tell: Optuna refuses artifacts for finished trials. Never fails the trial.
        attrs.update(save_trial_artifacts(self.study, self.trial, self.reporter.history, result, spec=self.spec))
        self.reporter.write({**attrs, **(extra or {})})

    def _outcome(self, state: Outcome, value: float | None, epochs: int, reason: str | None = None) -> TrialOutcome:
        return TrialOutcome(self.trial.number, state, value, epochs, time.monotonic() - self.started, reason)


def failure_reason(exc: Exception) -> str:
    """A failed trial's ``fail_reason``: an HpoError's message is already in the user's terms;
    anything else is named by its type. Also what a worker says when its fixed dataset cannot
    load (hpo.worker.loop), so that the message is the one every trial would have recorded."""
    return str(exc) if isinstance(exc, HpoError) else f"{type(exc).__name__}: {exc}"


def objective_values(objectives: list[Objective], result: TrainingResult) -> list[float]:
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


def _context_attrs(config: TrialConfig, device: str) -> dict[str, Any]:
    import sys
    from importlib.metadata import version

    import optuna

    from hpo.worker.threads import worker_threads

    # The worker's warm-up has loaded torch; only a stand-in trainer (benchmarks) runs without
    # it, and importing it here would cost that worker ~300 MB.
    torch = sys.modules.get("torch")
    return {
        CONFIG: config.to_json(),
        SEED: config.train.seed,
        DEVICE: device,
        CPU_THREADS: torch.get_num_threads() if torch is not None else worker_threads(),
        VERSIONS: {"hpo": version("hpo"), "optuna": optuna.__version__,
                   "torch": torch.__version__ if torch is not None else "not loaded",
                   "python": platform.python_version()},
    }


def _result_attrs(curves: dict[str, list[float]], result: TrainingResult, asked_at: float | None) -> dict[str, Any]:
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
        CURVES: curves,
    }
    if result.first_step_at is not None and asked_at is not None:
        # From ask to the first optimiser step: sampling, storage, data, model, optimiser.
        attrs[STARTUP_SECONDS] = round(result.first_step_at - asked_at, 4)
    return attrs


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


def abandon(study: Study, trial: Trial, reason: str, max_retries: int) -> str:
    """Fail ``trial`` with ``reason`` and enqueue its retry at once (a second stop signal);
    returns what became of it, for the worker's last line (``recovery.hand_back``)."""
    from hpo.storage.optuna_internals import trial_id_of
    from hpo.worker.recovery import hand_back

    return hand_back(study, trial_id_of(trial), trial.number, reason, max_retries)
