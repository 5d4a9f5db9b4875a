"""Trials whose worker process died on this machine: failed with the reason, and retried.

A worker killed with SIGKILL (or by the out-of-memory killer) leaves its trial RUNNING for
ever: the embedded journal store has no heartbeats, and Optuna only cleans up stale trials
inside ``study.optimize``. Each worker records its host and pid when a trial starts; any
worker on the same host can then tell that the process is gone, fail the trial with that
reason, and enqueue a retry with the same parameters (at most ``budget.max_retries`` times).
Trials of workers on other machines need heartbeats (not built yet).
"""

from __future__ import annotations

import os
import socket
from typing import Any

RETRIES_ATTR = "retries"
RETRY_OF_ATTR = "retry_of"


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


def sweep_dead_local_trials(study: Any, max_retries: int) -> list[int]:
    """Fail the RUNNING trials whose worker process on this host is gone; returns their numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    host = socket.gethostname()
    swept = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        pid = worker.get("pid")
        if worker.get("host") != host or not isinstance(pid, int) or _process_exists(pid):
            continue
        storage = study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"worker process {pid} on {host} died")
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another worker swept it first
            continue
        swept.append(trial.number)
        retries = int(trial.user_attrs.get(RETRIES_ATTR, 0))
        if retries < max_retries:
            study.enqueue_trial(dict(trial.params),
                                user_attrs={RETRY_OF_ATTR: trial.number, RETRIES_ATTR: retries + 1})
    return swept
