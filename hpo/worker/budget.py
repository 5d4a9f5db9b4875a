"""The study's budget is global: shared by every worker process on every machine.

Optuna's ``n_trials`` and ``timeout`` count per process. Here a worker checks the shared
study before asking for a trial, and again after: trial numbers are handed out in one
order by the storage, so a trial whose lower-numbered, non-failed siblings already fill
the budget is over it and is handed back unrun (this closes the race between two
workers that both saw one slot left).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpo.study.attrs import OVER_BUDGET, RETRIED
from hpo.study.studies import budget_started_at

if TYPE_CHECKING:
    from optuna import Study

    from hpo.spec.model import Budget


@dataclass(frozen=True)
class BudgetState:
    finished: int  # complete + pruned
    claimed: int  # finished + running + waiting
    failed: int
    stop_reason: str | None
    exhausted: bool  # True: stop with success; False with a reason: stop with failure


def budget_state(study: Study, budget: Budget) -> BudgetState:
    from optuna.trial import TrialState

    from hpo.storage.proxies import light_study

    trials = light_study(study).get_trials(deepcopy=False)  # every trial: keep the read light
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    claimed = finished + sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    # Trials handed back unrun, or failed and retried (worker died or was stopped), say
    # nothing about the spec: they do not count towards max_failed_trials.
    failed = sum(
        t.state == TrialState.FAIL
        and not t.user_attrs.get(OVER_BUDGET)
        and not t.user_attrs.get(RETRIED)
        for t in trials
    )
    reason, exhausted = None, False
    if budget.max_failed_trials is not None and failed >= budget.max_failed_trials:
        reason = (f"{failed} trials failed, reaching budget.max_failed_trials = "
                  f"{budget.max_failed_trials}; see 'hpo study show' for the reasons")
    elif (budget.n_trials is not None and claimed >= budget.n_trials
          and not any(t.state == TrialState.WAITING for t in trials)):  # retries still to run
        reason, exhausted = f"budget spent: {finished} of {budget.n_trials} trials finished", True
        if finished < budget.n_trials:
            reason += f", the other {claimed - finished} are running in other workers"
    elif budget.timeout is not None and time.time() - budget_started_at(study) >= budget.timeout:
        reason, exhausted = f"budget.timeout of {budget.timeout:g} s reached", True
    return BudgetState(finished, claimed, failed, reason, exhausted)


def is_over_budget(study: Study, trial_number: int, budget: Budget) -> bool:
    """Whether the trials numbered before ``trial_number`` already fill ``budget.n_trials``."""
    from optuna.trial import TrialState

    if budget.n_trials is None or trial_number < budget.n_trials:
        return False  # trial numbers start at 0: fewer than n_trials are numbered before it
    from hpo.storage.proxies import light_study

    ahead = sum(
        t.number < trial_number and t.state != TrialState.FAIL
        for t in light_study(study).get_trials(deepcopy=False)
    )
    return ahead >= budget.n_trials
