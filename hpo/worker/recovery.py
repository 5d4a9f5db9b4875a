"""Trials whose worker is gone: failed with the reason, and retried from their checkpoint.

A worker killed with SIGKILL (or by the out-of-memory killer, or with its machine) leaves its
trial RUNNING for ever: Optuna cleans up stale trials only inside ``study.optimize``, and the
embedded journal store has no heartbeats. Two ways to tell a worker is gone:

- on the same host: each worker records its host and pid when a trial starts, and the
  process no longer exists;
- on a database: the trial's heartbeat (``hpo.worker.heartbeat``) is older than the grace period.

Either way the trial is failed with the reason and a retry with the same parameters is
enqueued (at most ``budget.max_retries`` times), pointing at the trial's last checkpoint so
that the retry resumes there. A worker stopped by SIGTERM or SIGINT hands its trial back the
same way.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from hpo.study.attrs import (
    CHECKPOINT_SUPERSEDED,
    FAIL_REASON,
    RESUME_FROM,
    RETRIED,
    RETRIES,
    RETRY_OF,
    TrialRecord,
    WorkerIdentity,
)
from hpo.worker.signals import uninterrupted

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import FrozenTrial


def worker_identity(rank: int) -> dict[str, Any]:
    """The ``worker`` attribute of a trial this process runs."""
    return WorkerIdentity(socket.gethostname(), os.getpid(), rank).as_attr()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def fail_and_retry(study: Study, trial: FrozenTrial, reason: str, max_retries: int) -> bool:
    """Fail ``trial`` (a FrozenTrial, as recently read) with ``reason`` and enqueue its retry.

    Returns False when another worker finished or swept it first (then nothing is enqueued,
    so two sweepers never make two retries)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from hpo.storage.optuna_internals import storage_of, trial_id_of

    storage, trial_id = storage_of(study), trial_id_of(trial)
    record = TrialRecord.from_frozen(trial)
    retries = int(record.retries)
    params = _params_to_retry(trial, record)
    retry = retries < max_retries and params is not None
    if params is None:
        reason += " before its parameters were stored: not retried, the sampler picks the next trial's"
    with uninterrupted():  # failed without its retry enqueued, the trial would be lost
        try:
            storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
            if retry or params is None:  # no failure of its config either way: not counted as one
                storage.set_trial_user_attr(trial_id, RETRIED, True)
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                return False
        except UpdateFinishedTrialError:
            return False
        if retry and params is not None:
            study.enqueue_trial(params, user_attrs=_retry_attrs(trial.number, record, retries))
    return True


def _params_to_retry(trial: FrozenTrial, record: TrialRecord) -> dict[str, Any] | None:
    """The parameters ``trial``'s retry runs with; None when it has none to run with.

    A worker writes a trial's parameters together with its config (``TrialRun._sample``, one
    write), so a trial with neither died between the ask and that write: it never trained,
    so there is no checkpoint to resume. Its retry would be queued with no parameters: the
    grid sampler refuses such a trial (every worker that took it failed it), and any other
    sampler would choose new ones, as for a new trial. So it is not retried: failed (counted
    as no failure of the spec), its budget slot is free again, and the sampler chooses the
    next trial's parameters (the grid sampler counts a failed trial without parameters as
    not visited, so it hands that point out again: SharedGridSampler in hpo.spec.strategies;
    Optuna's own counts it visited and re-runs a random point instead). A trial
    that was itself taken from the queue (a retry) keeps the parameters it was queued with,
    and its checkpoint to resume from. With its config written, the trial's parameters are
    the ones it ran (none at all when nothing is searched)."""
    from hpo.storage.optuna_internals import queued_params

    if trial.params or record.config is not None:
        return dict(trial.params)
    return queued_params(trial)


def _retry_attrs(number: int, record: TrialRecord, retries: int) -> dict[str, Any]:
    """What the retry of trial ``number`` starts with: whose retry it is, and the checkpoint
    to resume from."""
    attrs: dict[str, Any] = {RETRY_OF: number, RETRIES: retries + 1}
    checkpoint = record.checkpoint or record.resume_from
    if checkpoint:
        attrs[RESUME_FROM] = checkpoint
    superseded = record.checkpoint_superseded
    if superseded and superseded != checkpoint:
        attrs[CHECKPOINT_SUPERSEDED] = superseded
    return attrs


def sweep_dead_trials(study: Study, max_retries: int, *, grace_period: float | None = None) -> list[int]:
    """Fail and retry the RUNNING trials whose worker is gone; returns their numbers.

    ``grace_period``: on a database with heartbeats, a trial whose last heartbeat is older
    than this is gone too (None: only dead processes on this host are detected)."""
    from optuna.trial import TrialState

    from hpo.storage.optuna_internals import trial_id_of

    host = socket.gethostname()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stale = _stale_trial_ids(study, grace_period) if grace_period is not None else set()
    swept = []
    for trial in running:
        worker = TrialRecord.from_frozen(trial).worker or WorkerIdentity()
        pid = worker.pid
        if trial_id_of(trial) in stale:
            where = f"process {pid} on {worker.host}" if pid else "its worker"
            reason = f"worker {where} stopped sending heartbeats for over {grace_period:g} s"
        elif worker.host == host and isinstance(pid, int) and not _process_exists(pid):
            reason = f"worker process {pid} on {host} died"
        else:
            continue
        if fail_and_retry(study, trial, reason, max_retries):
            swept.append(trial.number)
    return swept


def _stale_trial_ids(study: Study, grace_period: float) -> set[int]:
    """Running trials whose heartbeat is older than the storage's grace period; none right
    after this worker's own connection came back (the others' heartbeats could not reach
    the database either, so they look old without being dead)."""
    from hpo.storage.optuna_internals import BaseHeartbeat, stale_trial_ids, storage_of, study_id_of
    from hpo.storage.proxies import ReconnectingStorage

    storage = storage_of(study)
    if not isinstance(storage, BaseHeartbeat) or not storage.get_heartbeat_interval():
        return set()
    if isinstance(storage, ReconnectingStorage) and time.monotonic() - storage.last_outage_end < grace_period:
        return set()
    return set(stale_trial_ids(storage, study_id_of(study)))


def fail_left_running(study: Study, max_retries: int, reason: str) -> list[int]:
    """Fail and retry every RUNNING trial, whoever runs it; returns their numbers.

    For a caller who knows that no worker runs the study now (``hpo.run_worker(sole_worker=
    True)``: a notebook whose previous runtime was recycled, on a journal store that has no
    heartbeats and a new host name): the sweep above cannot tell a trial of a machine that
    is gone from one of a machine that is busy."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t.number for t in running if fail_and_retry(study, t, reason, max_retries)]


def hand_back(study: Study, trial_id: int, number: int, reason: str, max_retries: int) -> str:
    """Fail trial ``number`` (storage key ``trial_id``) with ``reason`` and enqueue its retry
    at once (a second stop signal); returns what became of it, for the worker's last line.
    When even this cannot be written, the trial stays RUNNING until a sweep retries it.

    ``hpo.worker.trial.abandon`` calls it for a trial that has started; it also says when a
    trial was not retried because its parameters were not stored yet, which is what a trial
    stopped between its ask and its start is."""
    from hpo.storage.optuna_internals import storage_of

    try:
        fresh = storage_of(study).get_trial(trial_id)
        if not fail_and_retry(study, fresh, reason, max_retries):
            return f"trial {number} had already ended"
    except Exception:  # noqa: BLE001 - the storage is unusable: leave at once all the same
        return (f"trial {number} left running: a worker's sweep retries it (on this host, or once "
                "its heartbeats are over budget.heartbeat_grace_period old)")
    record = TrialRecord.from_frozen(fresh)
    if _params_to_retry(fresh, record) is None:
        return f"trial {number} failed before its parameters were stored (the sampler picks the next trial's)"
    if int(record.retries) >= max_retries:
        return f"trial {number} failed (budget.max_retries = {max_retries} used up)"
    where = "from its last checkpoint" if record.checkpoint or record.resume_from else "from the start"
    return f"trial {number} handed back, to be resumed {where} by the next worker"
