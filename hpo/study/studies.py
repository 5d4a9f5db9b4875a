"""Create, load, list and delete studies. The spec travels inside the study.

A study's user attributes hold the validated spec (JSON) and its sha256, so a worker
needs only the study name and the storage; it rebuilds the sampler and pruner from the
spec because Optuna does not persist them.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hpo.errors import StudyNotFoundError, UsageError
from hpo.spec import spec_from_json, spec_sha256, spec_to_json
from hpo.storage.secrets import ScrubSecretsFilter
from hpo.storage.urls import StorageTarget, open_storage
from hpo.study.attrs import (
    BUDGET_EXTENSION,
    BUDGET_STARTED_AT,
    OVER_BUDGET,
    SPEC,
    SPEC_SHA256,
    WARM_START,
    StudyRecord,
    TrialRecord,
)

if TYPE_CHECKING:
    from optuna import Study
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

    from hpo.artifacts.store import RemovedArtifacts, StudyArtifacts
    from hpo.spec.model import Budget, Objective, Spec


def quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna logs through its own handler, which does not pass through the CLI's filter.
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, ScrubSecretsFilter) for f in handler.filters):
            handler.addFilter(ScrubSecretsFilter())
    # TPE's multivariate/group options are marked experimental; they are deliberate here.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@dataclass
class LoadedStudy:
    study: Study
    spec: Spec


def create_study(
    spec: Spec, target: StorageTarget, *, if_exists: str = "fail", artifacts: str | None = None,
    notes: list[str] | None = None,
) -> tuple[Study, bool]:
    """Create the study for ``spec``; returns (study, created). ``if_exists``: fail | reuse.

    ``artifacts``: a directory or s3://BUCKET for the trials' files (default: beside the
    journal file, or ./hpo-artifacts); recorded in the study for every worker and reader.
    A new study queues the spec's ``enqueue:`` sets, once (a reused one is left as it is).
    Reuse takes a spec that differs from the stored one only in ``budget.n_trials`` or
    ``budget.timeout`` and applies those limits as ``hpo study extend`` does; what it changed
    is appended to ``notes``, for the caller to show.
    """
    from hpo.artifacts.store import default_location, parse_location, record_store

    location = parse_location(artifacts) if artifacts else default_location(target)
    import optuna

    quiet_optuna()
    storage = open_storage(target)
    data = spec_to_json(spec)
    digest = spec_sha256(data)
    try:
        study = optuna.create_study(
            study_name=spec.name, storage=storage,
            directions=[_direction(objective) for objective in spec.objectives],
        )
    except optuna.exceptions.DuplicatedStudyError:
        if if_exists != "reuse":
            raise UsageError(
                f"study {spec.name!r} already exists in {target.display} "
                "(use --if-exists reuse to keep it, or --name to pick another name)"
            ) from None
        return _reuse(spec, storage, target, data, notes if notes is not None else []), False
    study.set_user_attr(SPEC, data)
    study.set_user_attr(SPEC_SHA256, digest)
    name_metrics(study, spec)
    record_store(study, location)
    _enqueue_sets(study, spec)
    return study, True


def name_metrics(study: Study, spec: Spec) -> None:
    """Name the study's objectives after the spec's metrics (``val_accuracy``, ...), for
    the dashboard's axes, Optuna's plots and ``trials_dataframe``; without names they read
    "Objective 0". Studies created before hpo set them get them when reused: one read of the
    study's system attributes, and one write the first time."""
    names: list[str] = [objective.metric for objective in spec.objectives]
    if study.metric_names != names:
        study.set_metric_names(names)


def _enqueue_sets(study: Study, spec: Spec) -> None:
    """The spec's ``enqueue:`` sets as waiting trials, in order; a set given twice runs once."""
    from hpo.spec.enqueue import enqueue_params

    for entry in spec.enqueue:
        study.enqueue_trial(enqueue_params(spec, entry), skip_if_exists=True)


def _reuse(spec: Spec, storage: BaseStorage, target: StorageTarget, data: dict[str, Any],
           notes: list[str]) -> Study:
    """The existing study, for ``create --if-exists reuse``: only if it holds the same spec,
    or one that differs only in the budget's n_trials and timeout (then applied to it)."""
    import optuna

    study = optuna.load_study(study_name=spec.name, storage=storage)
    record = StudyRecord.from_attrs(study.user_attrs)
    digest = spec_sha256(data)
    if record.spec_sha256 == digest:
        name_metrics(study, spec)
        return study
    if isinstance(record.spec, dict) and _without_limits(record.spec) == _without_limits(data):
        where = f"study {spec.name!r} in {target.display}"
        stored = _stored_spec(where, record)  # verified: the limits are applied over a genuine spec
        change = set_budget_limits(study, stored.budget, where,
                                   n_trials=spec.budget.n_trials, timeout=spec.budget.timeout)
        if change.changed:
            notes.append(f"the spec differs from the study's only in its budget: {change.describe()}")
        name_metrics(study, stored)
        return study
    raise UsageError(
        f"study {spec.name!r} already exists in {target.display} with a different spec "
        f"(sha256 {str(record.spec_sha256)[:12]} there, {digest[:12]} here; only budget.n_trials and "
        "budget.timeout may differ, they extend it); use --name to create a new study"
    ) from None


def _without_limits(data: dict[str, Any]) -> dict[str, Any]:
    """Spec JSON without the limits a study can be extended in (n_trials, timeout)."""
    budget = {k: v for k, v in (data.get("budget") or {}).items() if k not in _LIMITS}
    return {**data, "budget": budget}


_LIMITS = ("n_trials", "timeout")


# --- the budget's limits, extended -----------------------------------------------------------


@dataclass(frozen=True)
class BudgetChange:
    """The limits before and after ``set_budget_limits``."""

    n_trials: tuple[int | None, int | None]
    timeout: tuple[float | None, float | None]

    @property
    def changed(self) -> bool:
        return self.n_trials[0] != self.n_trials[1] or self.timeout[0] != self.timeout[1]

    def describe(self) -> str:
        """``n_trials 20 -> 40, timeout none -> 3600 s``."""
        def show(value: float | None, unit: str = "") -> str:
            return "none" if value is None else f"{value:g}{unit}"

        return ", ".join(
            f"{key} {show(old, unit)} -> {show(new, unit)}"
            for key, (old, new), unit in (("n_trials", self.n_trials, ""), ("timeout", self.timeout, " s"))
            if old != new
        ) or "no change"


def effective_budget(study: Study, budget: Budget) -> Budget:
    """The budget in force: the stored spec's ``budget`` with the limits an extension set.
    Read from the storage on each call, so running workers follow ``hpo study extend``."""
    return budget_with(StudyRecord.from_attrs(study.user_attrs), budget)


def budget_with(record: StudyRecord, budget: Budget) -> Budget:
    """``budget`` with ``record``'s extension applied (``effective_budget`` without a read)."""
    extension = record.budget_extension
    if not isinstance(extension, dict):
        return budget
    from pydantic import ValidationError

    update = {key: extension[key] for key in _LIMITS if key in extension}
    try:  # validated as the spec's own limits are: the attribute is outside the spec's sha256
        return type(budget).model_validate({**budget.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"the study's budget extension ({BUDGET_EXTENSION}) is invalid: {problems}; "
                         "set it again with 'hpo study extend'") from None


def own_trials(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The trials this study ran (or runs): without the unrun hand-backs of the budget race and
    the trials a warm start added from another study. What the budget counts."""
    return [t for t in trials if not t.user_attrs.get(OVER_BUDGET) and not t.user_attrs.get(WARM_START)]


def set_budget_limits(study: Study, budget: Budget, where: str, *, n_trials: int | None,
                      timeout: float | None) -> BudgetChange:
    """Make ``n_trials`` and ``timeout`` the study's limits (``budget``: the stored spec's).
    Refused when ``n_trials`` is below the trials already counted, or the timeout has passed."""
    from optuna.trial import TrialState

    before, corrupt = _budget_in_force(study, budget)
    counted = [t for t in own_trials(study.get_trials(deepcopy=False)) if t.state != TrialState.FAIL]
    if n_trials is not None and n_trials < len(counted):
        finished = sum(t.state.is_finished() for t in counted)
        raise UsageError(
            f"{where} has already counted {len(counted)} trials ({finished} finished, "
            f"{len(counted) - finished} running or waiting): n_trials can be lowered to {len(counted)} "
            f"at the least (got {n_trials})")
    started = StudyRecord.from_attrs(study.user_attrs).budget_started_at
    if timeout is not None and started is not None and time.time() - float(started) >= timeout:
        raise UsageError(
            f"{where} has been running for {time.time() - float(started):.0f} s since its first trial, "
            f"so a timeout of {timeout:g} s would end it now (expected a timeout above that)")
    change = BudgetChange((before.n_trials, n_trials), (before.timeout, timeout))
    if change.changed or corrupt:
        study.set_user_attr(BUDGET_EXTENSION, {"n_trials": n_trials, "timeout": timeout})
    return change


def _budget_in_force(study: Study, budget: Budget) -> tuple[Budget, bool]:
    """``effective_budget``, or the spec's ``budget`` and True when the stored extension is
    invalid: setting new limits is what its error asks for, so it must not fail on it too."""
    try:
        return effective_budget(study, budget), False
    except UsageError:
        return budget, True


def extend_study(name: str, target: StorageTarget, *, n_trials: int | None = None,
                 timeout: float | str | None = None) -> BudgetChange:
    """``hpo study extend``: a new global ``n_trials`` and/or ``timeout`` (seconds or a
    duration such as '2h') for an existing study; running workers pick it up before their next
    trial, and a finished study's workers can be started again."""
    from hpo.spec.model import parse_duration

    if n_trials is None and timeout is None:
        raise UsageError("nothing to extend: give --n-trials N and/or --timeout T")
    if n_trials is not None and n_trials < 1:
        raise UsageError(f"--n-trials must be at least 1 (got {n_trials})")
    try:
        seconds = None if timeout is None else parse_duration(timeout)
    except ValueError as exc:
        raise UsageError(f"--timeout {timeout}: {exc}") from None
    loaded = load_study(name, target)
    where = f"study {name!r} in {target.display}"
    current, _ = _budget_in_force(loaded.study, loaded.spec.budget)  # a corrupt extension is replaced
    return set_budget_limits(
        loaded.study, loaded.spec.budget, where,
        n_trials=current.n_trials if n_trials is None else n_trials,
        timeout=current.timeout if seconds is None else seconds)


def _direction(objective: Objective) -> Literal["maximize", "minimize"]:
    """``maximize`` or ``minimize``: validating an ``Objective`` fills in its metric's natural
    direction where the spec names none."""
    assert objective.direction is not None
    return objective.direction


def _require_store(name: str, target: StorageTarget) -> None:
    """No study can be in the default journal before it exists (a journal file named by
    --storage or $HPO_STORAGE that does not exist is open_storage's error, naming it)."""
    if target.is_default and not Path(target.url).expanduser().exists():
        raise StudyNotFoundError(f"no study named {name!r}: {target.display} does not exist")


def load_study(name: str, target: StorageTarget, *, sampler: BaseSampler | None = None,
               pruner: BasePruner | None = None,
               reconnect_for: float | None = None) -> LoadedStudy:
    """Load a study created by ``hpo study create`` together with its spec
    (``reconnect_for``: see ``open_storage``). Creates nothing: the study must exist."""
    import optuna

    quiet_optuna()
    _require_store(name, target)
    storage = open_storage(target, reconnect_for=reconnect_for, read_only=True)
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        names = [s.study_name for s in storage.get_all_studies()]
        known = ", ".join(sorted(names)) or "none"
        raise StudyNotFoundError(f"no study named {name!r} in {target.display} (studies: {known})") from None
    return LoadedStudy(study, _stored_spec(f"study {name!r} in {target.display}",
                                           StudyRecord.from_attrs(study.user_attrs)))


def _stored_spec(where: str, record: StudyRecord) -> Spec:
    """The study's spec, checked against its sha256 and validated again.

    The hash lives in the same storage as the spec, so whoever can rewrite one can rewrite
    the other: checking it catches corruption and careless hand edits, not a determined
    attacker. What keeps foreign code out of a worker is not this but the allow-list of
    model modules on the worker's own machine (hpo.models.custom.ModulePolicy)."""
    from pydantic import ValidationError

    data = record.spec
    if data is None:
        raise UsageError(f"{where} has no hpo spec: it was not created with 'hpo study create'")
    if not isinstance(data, dict):
        raise UsageError(f"{where}: its stored spec is not a JSON object (got {type(data).__name__}); "
                         "recreate the study with 'hpo study create'")
    if record.spec_sha256 is None:
        raise UsageError(f"{where} has no sha256 of its spec, so the spec cannot be verified; "
                         "recreate the study with 'hpo study create'")
    digest = spec_sha256(data)
    if digest != record.spec_sha256:
        raise UsageError(
            f"{where}: its stored spec does not match its sha256 ({str(record.spec_sha256)[:12]} "
            f"stored, {digest[:12]} computed): it was changed after 'hpo study create'; "
            "recreate the study from its spec file"
        )
    try:
        return spec_from_json(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"{where}: its stored spec is invalid: {problems}") from None


def list_studies(target: StorageTarget) -> list[dict[str, Any]]:
    """One row per study: name, direction, trial counts by state, best value."""
    import optuna

    from hpo.storage.optuna_internals import study_id_of

    quiet_optuna()
    storage = open_storage(target, read_only=True)  # an empty database stays empty
    rows = []
    for frozen in storage.get_all_studies():
        trials = visible_trials(storage.get_all_trials(study_id_of(frozen), deepcopy=False))
        own = own_trials(trials)  # counted as `hpo study show` counts: warm-start trials apart
        counts = count_states(own)
        direction = frozen.directions[0].name.lower()
        # The first objective's best (the only one for single-objective studies).
        values = [t.values[0] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = (max if direction == "maximize" else min)(values) if values else None
        record = StudyRecord.from_attrs(frozen.user_attrs)
        spec = record.spec or {}
        extension = record.budget_extension if isinstance(record.budget_extension, dict) else {}
        objective = spec.get("objective") or {}
        first = objective[0] if isinstance(objective, list) and objective else objective
        rows.append({
            "name": frozen.study_name,
            "direction": direction,
            "metric": first.get("metric") if isinstance(first, dict) else None,
            "objectives": len(frozen.directions),
            "trials": len(own),
            **counts,
            "best_value": best,
            # The budget in force (see effective_budget): an extension's n_trials, else the spec's.
            "budget_trials": extension.get("n_trials", (spec.get("budget") or {}).get("n_trials")),
        })
    return sorted(rows, key=lambda row: row["name"])


def visible_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials without the unrun hand-backs of the budget race (see hpo.worker.budget)."""
    return [t for t in trials if not t.user_attrs.get(OVER_BUDGET)]


def count_states(trials: Iterable[FrozenTrial | TrialRecord]) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0, "running": 0, "waiting": 0, "fail": 0}
    for trial in trials:
        counts[trial.state.name.lower()] += 1
    return counts


@dataclass(frozen=True)
class DeletedStudy:
    """What ``delete_study`` did: the study's files, and what became of them."""

    artifacts: StudyArtifacts
    removed: RemovedArtifacts | None  # None: kept (keep_artifacts), or no store recorded


def delete_study(name: str, target: StorageTarget, *, keep_artifacts: bool = False) -> DeletedStudy:
    """Delete the study and, unless ``keep_artifacts``, the files its records name in its
    artifact store (files another study of the storage names too stay; a copy in another
    storage, made with ``optuna.copy_study``, is not seen and loses them: the CLI says so,
    and --keep-artifacts keeps them). The files go first:
    a store that cannot be reached, or fails midway, leaves the study in place, so that its
    records still say which files remain (running again finishes)."""
    import optuna

    from hpo.artifacts.store import remove_artifacts, study_artifacts

    quiet_optuna()
    _require_store(name, target)
    storage = open_storage(target, read_only=True)  # nothing to delete where nothing exists
    try:
        study = optuna.load_study(study_name=name, storage=storage)  # no spec check: any study goes
    except KeyError:
        raise StudyNotFoundError(f"no study named {name!r} in {target.display}") from None
    location = StudyRecord.from_attrs(study.user_attrs).artifact_store
    # Only studies with the same store can name the same files; read only those, lazily.
    sharing = () if keep_artifacts or location is None else (
        optuna.load_study(study_name=other.study_name, storage=storage)
        for other in storage.get_all_studies()
        if other.study_name != name and StudyRecord.from_attrs(other.user_attrs).artifact_store == location)
    artifacts = study_artifacts(study, sharing)
    removed = None if keep_artifacts or location is None else remove_artifacts(artifacts, name)
    optuna.delete_study(study_name=name, storage=storage)
    return DeletedStudy(artifacts, removed)


_started_at: weakref.WeakKeyDictionary[Study, float] = weakref.WeakKeyDictionary()


def budget_started_at(study: Study) -> float:
    """When the study's ``budget.timeout`` clock started (the first worker sets it). Read
    from the storage once per study object: once set, it never changes."""
    if study not in _started_at:
        started = StudyRecord.from_attrs(study.user_attrs).budget_started_at
        if started is None:
            started = time.time()
            study.set_user_attr(BUDGET_STARTED_AT, started)
        _started_at[study] = float(started)
    return _started_at[study]
