"""The study's budget is global: shared by every worker process on every machine.

Optuna's ``n_trials`` and ``timeout`` count per process. Here a worker checks the shared
study before asking for a trial, and again after: trial numbers are handed out in one
order by the storage, so a trial whose lower-numbered, non-failed siblings already fill
the budget is over it and is handed back unrun (this closes the race between two
workers that both saw one slot left).

The limits are the stored spec's, or those ``hpo study extend`` set since
(``hpo.study.studies.effective_budget``, read before every trial so running workers follow an
extension). Trials a warm start added from another study count towards none of them.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpo.study.attrs import FAIL_REASON, OVER_BUDGET, RETRIED
from hpo.study.studies import budget_started_at, effective_budget, own_trials

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import FrozenTrial

    from hpo.spec.model import Budget


@dataclass(frozen=True)
class BudgetState:
    finished: int  # complete + pruned
    claimed: int  # finished + running + waiting
    failed: int
    stop_reason: str | None
    exhausted: bool  # True: stop with success; False with a reason: stop with failure


def budget_state(study: Study, budget: Budget) -> BudgetState:
    """Where the study stands against ``budget`` (the stored spec's; an extension applies)."""
    from optuna.trial import TrialState

    from hpo.storage.proxies import light_study

    budget = _in_force(study, budget, reuse=False)
    # Every trial: keep the read light.
    trials = own_trials(light_study(study).get_trials(deepcopy=False))
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    claimed = finished + sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    failed = sum(_counts_as_failed(t) for t in trials)
    failures = failure_stop(trials, budget)
    if failures is not None:
        return BudgetState(finished, claimed, failed, failures, exhausted=False)
    spent = _spent(study, budget, finished, claimed, waiting=any(t.state == TrialState.WAITING for t in trials))
    return BudgetState(finished, claimed, failed, spent, exhausted=spent is not None)


# The budget in force as last read, per study object: (monotonic time, the spec's budget, it).
_read_budgets: weakref.WeakKeyDictionary[Study, tuple[float, Budget, Budget]] = weakref.WeakKeyDictionary()
REUSE_FOR = 1.0  # seconds


def _in_force(study: Study, budget: Budget, *, reuse: bool) -> Budget:
    """``effective_budget``; with ``reuse``, the one read for ``budget`` at most REUSE_FOR s ago:
    the check after ``ask`` follows the one before it by milliseconds, and each read is the
    study's attributes, the stored spec among them (3 statements on a database)."""
    last = _read_budgets.get(study)
    if reuse and last is not None and last[1] is budget and time.monotonic() - last[0] <= REUSE_FOR:
        return last[2]
    in_force = effective_budget(study, budget)
    _read_budgets[study] = (time.monotonic(), budget, in_force)
    return in_force


def _spent(study: Study, budget: Budget, finished: int, claimed: int, *, waiting: bool) -> str | None:
    """Why the budget is spent (the study is done), or None."""
    if budget.n_trials is not None and claimed >= budget.n_trials and not waiting:  # retries still to run
        reason = f"budget spent: {finished} of {budget.n_trials} trials finished"
        if finished < budget.n_trials:
            reason += f", the other {claimed - finished} are running in other workers"
        return reason
    if budget.timeout is not None and time.time() - budget_started_at(study) >= budget.timeout:
        return f"budget.timeout of {budget.timeout:g} s reached"
    return None


def _counts_as_failed(trial: FrozenTrial) -> bool:
    """A failure that says something about the spec. Trials handed back unrun, or failed and
    retried (their worker died or was stopped), say nothing: they count towards neither
    max_failed_trials nor a run of failures."""
    from optuna.trial import TrialState

    return (trial.state == TrialState.FAIL and not trial.user_attrs.get(OVER_BUDGET)
            and not trial.user_attrs.get(RETRIED))


@dataclass(frozen=True)
class FailureStreak:
    """The failed trials the study's finished trials end with, all for one reason."""

    reason: str
    count: int
    first: int  # trial numbers
    last: int


def failure_streak(trials: Iterable[FrozenTrial]) -> FailureStreak | None:
    """The study's finished trials, in number order (the order every worker sees, whichever
    ran them), end with this run of failures for the same reason; None if they end otherwise.

    Running and waiting trials are passed over (one that later completes ends the run then),
    as are failures that say nothing about the spec (see ``_counts_as_failed``)."""
    from optuna.trial import TrialState

    streak: FailureStreak | None = None
    for trial in sorted(trials, key=lambda t: t.number):
        if not trial.state.is_finished() or (trial.state == TrialState.FAIL and not _counts_as_failed(trial)):
            continue
        if trial.state != TrialState.FAIL:
            streak = None
            continue
        reason = str(trial.user_attrs.get(FAIL_REASON, "unknown"))
        if streak is not None and streak.reason == reason:
            streak = FailureStreak(reason, streak.count + 1, streak.first, trial.number)
        else:
            streak = FailureStreak(reason, 1, trial.number, trial.number)
    return streak


def failure_stop(trials: Sequence[FrozenTrial], budget: Budget) -> str | None:
    """Why failures stop the study (every worker, and ``hpo study show`` says so), or None.

    A run of the same failure names its reason: a missing file or a bug fails every trial
    alike, and more trials would only repeat it."""
    streak = failure_streak(trials)
    if streak is not None and streak.count >= budget.max_consecutive_failures:
        return (f"{streak.count} trials in a row failed with the same reason, reaching "
                f"budget.max_consecutive_failures = {budget.max_consecutive_failures}: {streak.reason}")
    failed = sum(_counts_as_failed(t) for t in trials)
    if failed >= budget.failed_trials_allowed:
        default = "" if budget.max_failed_trials is not None else " (by default budget.n_trials)"
        return (f"{failed} trials failed, reaching budget.max_failed_trials = "
                f"{budget.failed_trials_allowed}{default}; see 'hpo study show' for the reasons")
    return None


def is_over_budget(study: Study, trial_number: int, budget: Budget) -> bool:
    """Whether the trials numbered before ``trial_number`` already fill ``budget.n_trials``
    (an extension applies; a warm start's added trials do not count)."""
    from optuna.trial import TrialState

    budget = _in_force(study, budget, reuse=True)
    if budget.n_trials is None or trial_number < budget.n_trials:
        return False  # trial numbers start at 0: fewer than n_trials are numbered before it
    from hpo.storage.proxies import light_study

    ahead = sum(
        t.number < trial_number and t.state != TrialState.FAIL
        for t in own_trials(light_study(study).get_trials(deepcopy=False))
    )
    return ahead >= budget.n_trials
