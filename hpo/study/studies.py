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
from hpo.study.attrs import BUDGET_STARTED_AT, OVER_BUDGET, SPEC, SPEC_SHA256, StudyRecord, TrialRecord

if TYPE_CHECKING:
    from optuna import Study
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

    from hpo.spec.model import Objective, Spec


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
    spec: Spec, target: StorageTarget, *, if_exists: str = "fail", artifacts: str | None = None
) -> tuple[Study, bool]:
    """Create the study for ``spec``; returns (study, created). ``if_exists``: fail | reuse.

    ``artifacts``: a directory or s3://BUCKET for the trials' files (default: beside the
    journal file, or ./hpo-artifacts); recorded in the study for every worker and reader.
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
        return _reuse(spec.name, storage, target, digest), False
    study.set_user_attr(SPEC, data)
    study.set_user_attr(SPEC_SHA256, digest)
    record_store(study, location)
    return study, True


def _reuse(name: str | None, storage: BaseStorage, target: StorageTarget, digest: str) -> Study:
    """The existing study ``name``, for ``create --if-exists reuse``: only if it holds the
    same spec (sha256 ``digest``)."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    stored = StudyRecord.from_attrs(study.user_attrs).spec_sha256
    if stored != digest:
        raise UsageError(
            f"study {name!r} already exists in {target.display} with a different spec "
            f"(sha256 {str(stored)[:12]} there, {digest[:12]} here); use --name to create a new study"
        ) from None
    return study


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
        counts = count_states(trials)
        direction = frozen.directions[0].name.lower()
        # The first objective's best (the only one for single-objective studies).
        values = [t.values[0] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = (max if direction == "maximize" else min)(values) if values else None
        spec = StudyRecord.from_attrs(frozen.user_attrs).spec or {}
        objective = spec.get("objective") or {}
        first = objective[0] if isinstance(objective, list) and objective else objective
        rows.append({
            "name": frozen.study_name,
            "direction": direction,
            "metric": first.get("metric") if isinstance(first, dict) else None,
            "objectives": len(frozen.directions),
            "trials": len(trials),
            **counts,
            "best_value": best,
            "budget_trials": (spec.get("budget") or {}).get("n_trials"),
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


def delete_study(name: str, target: StorageTarget) -> None:
    import optuna

    quiet_optuna()
    _require_store(name, target)
    storage = open_storage(target, read_only=True)  # nothing to delete where nothing exists
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        raise StudyNotFoundError(f"no study named {name!r} in {target.display}") from None


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
