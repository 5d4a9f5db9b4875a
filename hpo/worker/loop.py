"""The worker loop: ask the shared study for a trial, train it, tell the result, repeat
until the study's global budget is spent.

Ask/tell rather than ``study.optimize`` because the budget is global across processes
and machines (``optimize``'s ``n_trials`` counts per process) and because every trial
records what a user compares (curves, parameter count, seconds per epoch, reasons).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpo.errors import Aborted, HpoError, UsageError
from hpo.storage.urls import DEFAULT_RECONNECT_TIMEOUT, StorageTarget
from hpo.study.attrs import FAIL_REASON, OVER_BUDGET, WORKER
from hpo.study.studies import load_study, name_metrics
from hpo.worker.budget import budget_state, is_over_budget
from hpo.worker.device import AUTO, check_device_name, describe_device, resolve_device
from hpo.worker.heartbeat import Watchdog
from hpo.worker.model_code import check_model_code
from hpo.worker.recovery import hand_back, worker_identity
from hpo.worker.signals import LeaveNow, StopRequest, stop_on_signals
from hpo.worker.threads import fix_threads, keep_threads, registered_worker, requested_threads, worker_threads
from hpo.worker.trial import Progress, Trainer, TrialOutcome, TrialRun, failure_reason

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import Trial

    from hpo.spec.model import Budget, Spec


@dataclass
class WorkerReport:
    outcomes: list[TrialOutcome] = field(default_factory=list)
    stop_reason: str = ""
    exit_code: int = 0


def run_worker(
    name: str,
    target: StorageTarget,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str = AUTO,
    rank: int = 0,
    progress: Progress | None = None,
    reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
    trainer: Trainer | None = None,
    threads: int | None = None,
) -> WorkerReport:
    """Run trials of study ``name`` until its budget (or this worker's limits) is spent.

    A first SIGTERM or SIGINT (Ctrl-C) stops the worker: its trial is checkpointed and handed
    back; a second one aborts (hpo.worker.signals).

    ``reconnect_timeout``: how long to wait for an unreachable database before giving up.
    ``trainer``: stands in for ``hpo.training.train_model`` (benchmarks time the service alone).
    ``threads``: torch's CPU threads, kept for the worker's life (default: ``HPO_THREADS``, else
    the cores ÷ the hpo workers live on this machine at its start; hpo.worker.threads).
    """
    with stop_on_signals() as stop:
        try:
            return _run_worker(name, target, stop, n_trials=n_trials, timeout=timeout, device=device,
                               rank=rank, progress=progress, reconnect_timeout=reconnect_timeout,
                               trainer=trainer, threads=threads)
        except LeaveNow:
            return WorkerReport(stop_reason=f"stopped by {stop.signal} before its first trial")


def _run_worker(name: str, target: StorageTarget, stop: StopRequest, *, n_trials: int | None,
                timeout: float | None, device: str, rank: int, progress: Progress | None,
                reconnect_timeout: float, trainer: Trainer | None, threads: int | None) -> WorkerReport:
    check_device_name(device)  # a typo is refused before the storage is opened
    requested = requested_threads(threads)  # so is a thread count below one
    emit = progress or _no_progress
    study, spec, watchdog = _open_study(name, target, stop, emit, reconnect_timeout)
    with registered_worker(), _own_heartbeats():
        # Once, counting this worker among the machine's: one count for all its trials, so
        # that their timings compare (hpo.worker.threads).
        fix_threads(requested)
        # First, with only optuna and the stored spec loaded: a worker on a finished study
        # says so at once, without torch's import or the dataset (seconds and a GB).
        finished = _nothing_to_do(study, spec, watchdog, stop)
        if finished is not None:
            return finished
        with stop.holding_nothing():  # a stop signal leaves at once: there is nothing to save yet
            device = _prepare(study, spec, device, rank, emit, trainer)
        with watchdog:
            return _trial_loop(study, spec, n_trials=n_trials, timeout=timeout, device=device,
                               rank=rank, emit=emit, stop=stop, watchdog=watchdog,
                               trainer=trainer)


def nothing_to_do(name: str, target: StorageTarget, *,
                  reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT) -> WorkerReport | None:
    """The report of a worker started now on study ``name`` that would run no trial (its
    budget spent, or its failures over budget), else None; at the cost of one read of the
    study, without torch. A pool asks this once before starting its children."""
    with stop_on_signals() as stop:
        try:
            study, spec, watchdog = _open_study(name, target, stop, _no_progress, reconnect_timeout)
            with _own_heartbeats():
                return _nothing_to_do(study, spec, watchdog, stop)
        except LeaveNow:
            return WorkerReport(stop_reason=f"stopped by {stop.signal} before its first trial")


def _no_progress(event: str, data: dict[str, Any]) -> None:
    return None


def _open_study(name: str, target: StorageTarget, stop: StopRequest, emit: Progress,
                reconnect_timeout: float) -> tuple[Study, Spec, Watchdog]:
    """The study, its stored spec, and the watchdog that will beat the trials' hearts."""
    with stop.holding_nothing(), preparing(emit, f"opening study {name}"):
        loaded = load_study(name, target, reconnect_for=reconnect_timeout)
    study, spec = loaded.study, loaded.spec
    name_metrics(study, spec)  # a study created before hpo named its objectives gets the names
    grace = _enable_heartbeats(study, spec.budget)
    watchdog = Watchdog(study, max_retries=spec.budget.max_retries,
                        interval=spec.budget.heartbeat_interval, grace_period=grace,
                        sweep_every=spec.budget.heartbeat_grace_period / 2,
                        on_swept=lambda number: emit("swept", {"trial": number}))
    return study, spec, watchdog


@contextlib.contextmanager
def _own_heartbeats() -> Iterator[None]:
    """Optuna warns on every ask that heartbeats belong to study.optimize: hpo beats its own."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def _nothing_to_do(study: Study, spec: Spec, watchdog: Watchdog, stop: StopRequest) -> WorkerReport | None:
    """Why this worker would run no trial, as its report; None when there is work."""
    # Outside holding_nothing: a first stop signal must not cut a sweep between failing a
    # trial and enqueueing its retry. The sweep comes first: a trial left behind by a dead
    # worker counts as claimed until it is swept, and its retry reopens the budget.
    watchdog.sweep()
    if stop():
        return WorkerReport(stop_reason=f"stopped by {stop.signal} before its first trial")
    state = budget_state(study, spec.budget)
    if state.stop_reason:
        return WorkerReport(stop_reason=state.stop_reason, exit_code=0 if state.exhausted else 1)
    return None


def _prepare(study: Study, spec: Spec, device: str, rank: int, emit: Progress,
             trainer: Trainer | None) -> str:
    """What the first trial needs: only allowed model code, the sampler and pruner, the
    device (``auto`` resolved, announced) and the warm-up; returns the device."""
    from hpo.spec.space import max_epochs, space_facts
    from hpo.spec.strategies import build_pruner, build_sampler
    from hpo.storage.optuna_internals import every_trial

    check_model_code(spec)  # before any trial: only code this machine allows
    study.sampler = build_sampler(spec.sampler, rank=rank, space=space_facts(spec, all_trials=every_trial))
    study.pruner = build_pruner(spec.pruner, max_epochs=max_epochs(spec))
    if trainer is not None:  # a stand-in trainer (benchmarks) uses neither torch nor the dataset
        return device
    with preparing(emit, "importing torch"):
        device = resolve_device(device)
        import hpo.training.loop  # noqa: F401 - torch and the training code, timed here
    keep_threads()  # torch is loaded now: the warm-up runs with the worker's threads too
    emit("chosen_device", {"resolved": device,
                           "description": describe_device(device, cpu_threads=worker_threads())})
    _warm_up(spec, device, emit)
    return device


def _warm_up(spec: Spec, device: str, emit: Progress) -> None:
    """Pay the one-off costs (torch's import, the fixed dataset) before the first trial, so
    that no trial's start-up or heartbeat includes them."""
    from hpo.training.loop import warm_up

    with preparing(emit, f"loading {spec.data.name}") as said:
        images = _load_fixed_dataset(spec, device)
        if images is not None:
            said["done"] = f"loading {spec.data.name} ({images:,} training images)"
    with preparing(emit, f"warming up on {device}"), contextlib.suppress(Exception):
        warm_up(None, device)  # the first trial meets the same problem, if any, and records it


@contextlib.contextmanager
def preparing(emit: Progress, step: str) -> Iterator[dict[str, str]]:
    """Say that a start-up step begins and, when it ends, what it found (the step may put a
    ``done`` text in the dict it is given) and how long it took: a worker under load spends
    tens of seconds here, and should not spend them silent (hpo.worker.progress)."""
    emit("preparing", {"step": step})
    started = time.perf_counter()
    said: dict[str, str] = {}
    yield said
    emit("preparing", {"step": step, "done": said.get("done", step),
                       "seconds": time.perf_counter() - started})


# What a dataset that cannot load raises when the fault is in the spec or the files: hpo's
# own loaders say what is wrong in an HpoError (TrainingError); the rest is the file system.
DATASET_FAULTS = (HpoError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


def _load_fixed_dataset(spec: Spec, device: str) -> int | None:
    """Load what every trial of the spec loads alike (cached for the trials of this worker).

    A dataset that cannot load would fail every trial alike, endlessly (failed trials do not
    count towards n_trials): the worker stops before creating any, with the reason each trial
    would have recorded (exit 2). With ``data.*`` keys searched, the dataset's files are still
    the same for every trial unless a searched key chooses them (``data.name``, ``data.root``,
    ...); if one does, only some values may fail: the trials find out, and the failure budget
    (max_failed_trials, max_consecutive_failures) ends a study whose values all fail.

    Returns the number of training images when the splits were loaded, else None."""
    from hpo.training.data import load_source, load_splits, source_keys

    searched = {key.removeprefix("data.") for key in spec.search if key.startswith("data.")}
    try:
        if not searched:
            # The very splits every trial uses; through the on-disk cache: a restarted worker
            # reads them instead of loading and splitting the source (hpo.training.cache).
            return len(load_splits(spec.data, device, disk_cache=True).train)
        elif not searched & source_keys(spec.data.name):
            load_source(spec.data)  # the files every trial reads
    except DATASET_FAULTS as exc:
        raise UsageError(failure_reason(exc)) from exc
    except Exception:
        # Not the dataset's own fault (a download, the device, memory) and maybe passing: the
        # trials meet it, the failure budget bounds them, and a pool restarts an exit 1.
        return None
    return None


def _enable_heartbeats(study: Study, budget: Budget) -> float | None:
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


def _trial_loop(study: Study, spec: Spec, *, n_trials: int | None, timeout: float | None,
                device: str, rank: int, emit: Progress, stop: StopRequest, watchdog: Watchdog,
                trainer: Trainer | None) -> WorkerReport:
    from hpo.storage.optuna_internals import storage_of, trial_id_of, trial_start_writes
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
        keep_threads()  # the worker's count, whatever started or stopped around it
        asked_at = time.perf_counter()
        # First thing: who runs it, so that a worker on this host can tell if we die, and its
        # first heartbeat. On PostgreSQL a new trial is created with both, in the creation's
        # own transaction (hpo.storage.optuna_internals.OneTripTrialCreation); a trial claimed
        # from the queue (a retry) gets them in writes of their own.
        identity = {WORKER: worker_identity(rank)}
        with (one_read_of_the_study(storage_of(study)),  # see hpo.storage.proxies.OneReadPerTrial
              trial_start_writes(storage_of(study), user_attrs=identity, heartbeat=watchdog.beats) as written):
            trial = study.ask()
        try:
            created_with_them = written(trial_id_of(trial))
            watchdog.beat_for(trial_id_of(trial), first_recorded=created_with_them)
            if not created_with_them:
                trial.set_user_attr(WORKER, identity[WORKER])
            over_budget = is_over_budget(study, trial.number, spec.budget)
        except Aborted as aborted:  # a second stop signal before the trial started: hand it back too
            aborted.outcome = hand_back(study, trial_id_of(trial), trial.number, str(aborted), spec.budget.max_retries)
            watchdog.beat_for(None)
            raise
        try:
            if over_budget:
                _hand_back(study, trial)
                continue
            outcome = TrialRun(study, trial, spec, device=device, emit=emit, stop=stop,
                               trainer=trainer, asked_at=asked_at).run()
        finally:
            watchdog.beat_for(None)
        report.outcomes.append(outcome)
        emit("trial_end", {"outcome": outcome})
    return report


def _hand_back(study: Study, trial: Trial) -> None:
    """Another worker took the last slot first: close this trial without running it."""
    from optuna.trial import TrialState

    from hpo.storage.optuna_internals import tell
    from hpo.storage.writes import write_to_trial

    write_to_trial(trial, user_attrs={OVER_BUDGET: True,
                                      FAIL_REASON: "not run: the study's n_trials budget was already taken"})
    tell(study, trial, state=TrialState.FAIL)
