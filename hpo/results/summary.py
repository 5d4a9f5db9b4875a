"""Summaries of a study for ``hpo study show`` and ``hpo study best``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from hpo.errors import HpoError
from hpo.results.tables import Table, comparison_table, log_keys
from hpo.spec import spec_to_json
from hpo.study.attrs import (
    CONFIG,
    CURVES,
    DEVICE,
    IMAGES_PER_SECOND,
    PARAMS_TOTAL,
    PARAMS_TRAINABLE,
    PEAK_MEMORY_MB,
    PRUNED_AT_EPOCH,
    SECONDS_PER_EPOCH,
    WARM_START,
    TrialRecord,
    trial_records,
)
from hpo.study.studies import LoadedStudy, count_states, effective_budget, visible_trials
from hpo.worker.budget import failure_stop

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import FrozenTrial


def ranked_trials(study: Study, trials: Iterable[FrozenTrial | TrialRecord]) -> list[TrialRecord]:
    """Complete trials (FrozenTrials or TrialRecords) as TrialRecords, best first by the
    first objective (the only one, usually), with Optuna's rule for equal values.

    One truth for "best": optuna-dashboard shows as "Best Trial" what the storage's
    ``get_best_trial`` returns (``study.best_trial`` too), which keeps the first of equal
    values. ``hpo study best/show``, the report, retrain, warm starts and the Python API all
    rank through this function, so they name that same trial: by value, and of equal values
    the storage's best first, then the others by trial number. (PostgreSQL's
    ORDER BY does not promise which of equal values comes first, so the storage is asked
    rather than the rule re-implemented.) Equal values are common on small validation sets
    (one digits image is 0.28 points of accuracy); rather than break the tie by another
    metric, which the dashboard would not show, the tied trials are listed (``tied_with``):
    which of them is really better is for more seeds to say, not the validation loss.
    """
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    complete = trial_records(t for t in trials if t.state == TrialState.COMPLETE)
    maximize = study.directions[0] == StudyDirection.MAXIMIZE
    sign = -1.0 if maximize else 1.0
    first = _storage_best(study) if complete else None
    # Complete trials have values.
    return sorted(complete, key=lambda t: (sign * cast(float, t.value), t.number != first, t.number))


def _storage_best(study: Study) -> int | None:
    """The number of the trial Optuna (and optuna-dashboard) calls best; None for several
    objectives or no complete trial. ``best_trial`` is the storage's ``get_best_trial``, as
    the dashboard calls it, for studies without constraints (hpo sets none)."""
    if len(study.directions) > 1:
        return None
    try:
        return study.best_trial.number
    except ValueError:  # no complete trial in the study (``trials`` came from elsewhere)
        return None


def tied_with(best: TrialRecord, ranked: Iterable[TrialRecord]) -> list[int]:
    """The other trials of ``ranked`` with exactly ``best``'s value, in number order."""
    return sorted(t.number for t in ranked if t.number != best.number and t.value == best.value)


def _trial_row(trial: TrialRecord) -> dict[str, Any]:
    """A trial in ``show``'s output; its measurements named as the trial attributes are."""
    return {
        "number": trial.number,
        "value": trial.value,
        "values": list(trial.values) if trial.values else None,
        "epochs": trial.epochs_trained,
        SECONDS_PER_EPOCH: trial.seconds_per_epoch,
        PARAMS_TOTAL: trial.params_total,
        "params": dict(trial.params),
    }


def study_summary(loaded: LoadedStudy, *, top: int = 5) -> dict[str, Any]:
    """State counts, best value, top trials, why trials failed, and epochs pruning saved."""
    from optuna.trial import TrialState

    study, spec = loaded.study, loaded.spec
    stored = study.get_trials(deepcopy=False)
    trials = trial_records(visible_trials(stored))
    ranked = ranked_trials(study, trials)
    # Trials a warm start added from another study rank with the rest (as on the dashboard),
    # but were not run here: counts and epochs are this study's own.
    added = [t for t in trials if t.warm_start is not None]
    trials = [t for t in trials if t.warm_start is None]
    budget = effective_budget(study, spec.budget)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    trained = sum(t.epochs_trained or 0 for t in finished)
    full = sum((t.config or {}).get("train", {}).get("epochs", spec.train.epochs) for t in finished)
    # Why trials stopped abnormally: failures, and trials closed as pruned because they
    # diverged or ran out of memory (see hpo.worker.trial.TrialRun.steer_away).
    failures = Counter(
        t.fail_reason if t.fail_reason is not None else "unknown" for t in trials
        if t.state == TrialState.FAIL or (t.state == TrialState.PRUNED and t.fail_reason is not None)
    )
    objectives = spec.objectives
    pareto = trial_records(sorted(study.best_trials, key=lambda t: t.number) if len(objectives) > 1 else [])
    best = _trial_row(ranked[0]) if ranked else None
    if best is not None and len(objectives) == 1:
        best["tied"] = tied_with(ranked[0], ranked)  # Optuna's rule named the first of these
    return {
        "name": study.study_name,
        "metric": objectives[0].metric,
        "direction": objectives[0].direction,
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in objectives],
        "pareto": [_trial_row(t) for t in pareto],
        "states": count_states(trials),
        "warm_start": {"trials": len(added),
                       "from": sorted({str(t.warm_start.get("study")) for t in added if t.warm_start})},
        "budget": {"n_trials": budget.n_trials, "timeout": budget.timeout,
                   "max_failed_trials": budget.failed_trials_allowed,
                   "max_consecutive_failures": budget.max_consecutive_failures,
                   "extended": budget != spec.budget},
        # The workers' own rule, on the same trials.
        "stopped": failure_stop([t for t in stored if t.user_attrs.get(WARM_START) is None], budget),
        "best": best,
        "top": [_trial_row(t) for t in ranked[:top]],
        "pruned": [
            {"number": t.number, PRUNED_AT_EPOCH: t.pruned_at_epoch,
             "reason": t.fail_reason if t.fail_reason is not None else "pruner"}
            for t in trials if t.state == TrialState.PRUNED
        ],
        "epochs": {"trained": trained, "without_pruning": full, "saved": full - trained},
        "failures": [{"reason": r, "count": n} for r, n in failures.most_common()],
    }


def best_trials(loaded: LoadedStudy) -> list[dict[str, Any]]:
    """The best trial (single objective) or the Pareto front (several), each with its
    params, full resolved config and a spec that re-runs it."""
    study = loaded.study
    ranked = ranked_trials(study, study.get_trials(deepcopy=False))
    if not ranked:
        counts = count_states(visible_trials(study.get_trials(deepcopy=False)))
        summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no trials"
        raise HpoError(f"study {study.study_name!r} has no completed trial yet ({summary})")
    if len(study.directions) == 1:
        return [{**_best_entry(loaded, ranked[0]), "tied": tied_with(ranked[0], ranked)}]
    front = {t.number for t in study.best_trials}
    return [_best_entry(loaded, t) for t in ranked if t.number in front]


def _best_entry(loaded: LoadedStudy, trial: TrialRecord) -> dict[str, Any]:
    study, spec = loaded.study, loaded.spec
    objectives = spec.objectives
    config = cast("dict[str, Any]", trial.config)  # recorded before training, so a complete trial has it
    values = cast("list[float]", trial.values)
    rerun = spec_to_json(spec)
    rerun.pop("enqueue", None)  # sets of searched keys: the re-run searches nothing
    rerun.update(config)
    rerun.update({
        "name": f"{study.study_name}-trial-{trial.number}",
        "search": {},
        "budget": {"n_trials": 1},
        "pruner": {"name": "none"},
    })
    return {
        "study": study.study_name,
        "number": trial.number,
        "metric": objectives[0].metric,
        "direction": objectives[0].direction,
        "metrics": [o.metric for o in objectives],
        "value": values[0],
        "values": list(values),
        "params": dict(trial.params),
        CONFIG: config,
        "spec": rerun,
    }


def trial_summary(loaded: LoadedStudy, number: int) -> dict[str, Any]:
    """One trial for ``hpo study show NAME --trial N``: its outcome and measurements, its
    per-epoch curves (train and validation accuracy), the class counts of each split by class
    name, the class weights the training loss applied, and the test split's counts from its
    latest ``hpo retrain --test`` (tuning never reads the test split)."""
    from hpo.study.attrs import StudyRecord

    study = loaded.study
    found = [t for t in visible_trials(study.get_trials(deepcopy=False)) if t.number == number]
    if not found:
        raise HpoError(f"study {study.study_name!r} has no trial {number}")
    [trial] = trial_records(found)
    counts = trial.class_counts()
    retrain = StudyRecord.from_attrs(study.user_attrs).retrains.get(number) or {}
    test = retrain.get("test") or {}
    if test.get("class_counts") and counts:
        names = next(iter(counts.values()))
        counts["test"] = dict(zip(names, test["class_counts"]))
    config = trial.config or {}
    return {
        "number": trial.number,
        "state": trial.state_name,
        "value": trial.value,
        "values": list(trial.values) if trial.values else None,
        "params": dict(trial.params),
        "model": (config.get("model") or {}).get("name"),
        "epochs": trial.epochs_trained,
        PARAMS_TOTAL: trial.params_total,
        PARAMS_TRAINABLE: trial.params_trainable,
        SECONDS_PER_EPOCH: trial.seconds_per_epoch,
        IMAGES_PER_SECOND: trial.images_per_second,
        PEAK_MEMORY_MB: trial.peak_memory_mb,
        DEVICE: trial.device,
        CURVES: {key: list(values) for key, values in trial.curves.items()},
        "class_counts": counts,
        "class_weights_setting": (config.get("train") or {}).get("class_weights", "none"),
        "class_weights": trial.class_weights(),
        "test_accuracy": test.get("accuracy"),
    }


def top_table(loaded: LoadedStudy, numbers: Iterable[int]) -> Table:
    """The report's comparison table (hpo.results.tables) of the trials ``numbers`` (the
    summary's top, best first), for ``hpo study show``: the same columns in both places.
    A second read of the trials, which Optuna's storages answer from their cache of
    finished trials."""
    from hpo.study.attrs import StudyRecord

    study, wanted = loaded.study, list(numbers)
    by_number = {t.number: t for t in trial_records(study.get_trials(deepcopy=False)) if t.number in wanted}
    retrains = StudyRecord.from_attrs(study.user_attrs).retrains
    return comparison_table([by_number[n] for n in wanted if n in by_number],
                            [o.metric for o in loaded.spec.objectives], retrains, log_keys(loaded.spec))
