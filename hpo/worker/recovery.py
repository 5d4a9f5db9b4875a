"""Trials whose worker is gone: failed with the reason, and retried from their checkpoint.

A worker killed with SIGKILL (or by the out-of-memory killer, or with its machine) leaves its
trial RUNNING for ever: Optuna cleans up stale trials only inside ``study.optimize``, and the
embedded journal store has no heartbeats. Two ways to tell a worker is gone:

- on the same host: each worker records its host and pid when a trial starts, and the
  process no longer exists;
- on a database: the trial's heartbeat (``hpo.heartbeat``) is older than the grace period.

Either way the trial is failed with the reason and a retry with the same parameters is
enqueued (at most ``budget.max_retries`` times), pointing at the trial's last checkpoint so
that the retry resumes there. A worker stopped by SIGTERM hands its trial back the same way.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

RETRIES_ATTR = "retries"
RETRY_OF_ATTR = "retry_of"
RETRIED_ATTR = "retried"  # on a failed trial: a retry was enqueued, so it is not a failure of its config
CHECKPOINT_ATTR = "checkpoint"  # the artifact id of the trial's latest checkpoint
RESUME_FROM_ATTR = "resume_from"  # on a retry: the checkpoint it starts from
# The checkpoint file the latest save replaced, removed right after it; a retry inherits it
# in case its worker died in between.
SUPERSEDED_ATTR = "checkpoint_superseded"


def worker_identity(rank: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "rank": rank}


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def fail_and_retry(study: Any, trial: Any, reason: str, max_retries: int) -> bool:
    """Fail ``trial`` (a FrozenTrial, as recently read) with ``reason`` and enqueue its retry.

    Returns False when another worker finished or swept it first (then nothing is enqueued,
    so two sweepers never make two retries)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    retries = int(trial.user_attrs.get(RETRIES_ATTR, 0))
    retry = retries < max_retries
    try:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        if retry:
            storage.set_trial_user_attr(trial._trial_id, RETRIED_ATTR, True)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    if retry:
        attrs = {RETRY_OF_ATTR: trial.number, RETRIES_ATTR: retries + 1}
        checkpoint = trial.user_attrs.get(CHECKPOINT_ATTR) or trial.user_attrs.get(RESUME_FROM_ATTR)
        if checkpoint:
            attrs[RESUME_FROM_ATTR] = checkpoint
        superseded = trial.user_attrs.get(SUPERSEDED_ATTR)
        if superseded and superseded != checkpoint:
            attrs[SUPERSEDED_ATTR] = superseded
        study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    return True


def sweep_dead_trials(study: Any, max_retries: int, *, grace_period: float | None = None) -> list[int]:
    """Fail and retry the RUNNING trials whose worker is gone; returns their numbers.

    ``grace_period``: on a database with heartbeats, a trial whose last heartbeat is older
    than this is gone too (None: only dead processes on this host are detected)."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stale = _stale_trial_ids(study, grace_period) if grace_period is not None else set()
    swept = []
    for trial in running:
        worker = trial.user_attrs.get("worker") or {}
        pid = worker.get("pid")
        if trial._trial_id in stale:
            where = f"process {pid} on {worker.get('host')}" if pid else "its worker"
            reason = f"worker {where} stopped sending heartbeats for over {grace_period:g} s"
        elif worker.get("host") == host and isinstance(pid, int) and not _process_exists(pid):
            reason = f"worker process {pid} on {host} died"
        else:
            continue
        if fail_and_retry(study, trial, reason, max_retries):
            swept.append(trial.number)
    return swept


def _stale_trial_ids(study: Any, grace_period: float) -> set[int]:
    """Running trials whose heartbeat is older than the storage's grace period; none right
    after this worker's own connection came back (the others' heartbeats could not reach
    the database either, so they look old without being dead)."""
    from hpo.storage.proxies import ReconnectingStorage

    storage = study._storage
    if not getattr(storage, "get_heartbeat_interval", lambda: None)():
        return set()
    if isinstance(storage, ReconnectingStorage) and time.monotonic() - storage.last_outage_end < grace_period:
        return set()
    return set(storage._get_stale_trial_ids(study._study_id))
