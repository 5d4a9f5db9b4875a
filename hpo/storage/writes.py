"""Several writes to one running trial sent as one: a transaction on a database, one locked
append (one fsync) on the journal file.

Optuna writes each parameter and each attribute on its own: on a database that is a
transaction (round trips and a commit) each, on the journal a lock, an append and an fsync
each. A trial of the digits space sets 10 parameters and about 20 attributes, so per-trial
overhead was mostly these writes. Optuna has no call for several at once, so this writes its
tables directly on a database (one transaction of a few bulk upserts, idempotent so that a
retry after a lost answer changes nothing; Optuna's own per-item steps where the database has
no ``ON CONFLICT``) and appends its own log entries on the journal.
tests/storage/test_trial_writes.py compares the result with Optuna's one-by-one calls, so an
Optuna upgrade that changes them fails loudly.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.storages import BaseStorage, JournalStorage

from hpo.storage.optuna_internals import (
    cached_frozen_trial,
    journal_batch,
    journal_batches,
    rdb_models,
    rdb_session,
    rdb_set_intermediate_value,
    rdb_set_param,
    rdb_set_user_attr,
    storage_of,
    trial_id_of,
    unwrap,
)
from hpo.storage.proxies import DelegatingStorage, ReconnectingStorage, rdb_backend

if TYPE_CHECKING:
    from optuna.storages import RDBStorage
    from optuna.trial import Trial
    from sqlalchemy.orm import Session

Param = tuple[str, float, BaseDistribution]  # name, value in Optuna's internal repr, distribution


def write_trial(storage: BaseStorage, trial_id: int, *, params: Sequence[Param] = (),
                intermediate_values: dict[int, float] | None = None,
                user_attrs: dict[str, Any] | None = None) -> None:
    """Set ``params``, ``intermediate_values`` (step -> value) and ``user_attrs`` of a
    running trial together, leaving it as Optuna's call per item would on that storage
    (parameters first, then steps, then attributes). A repeat is stored as those calls store
    it: a database keeps a parameter's first value (a second row is refused), the journal
    and the in-memory store the last; a step or an attribute takes the last value everywhere.
    (Optuna's trial itself never repeats a parameter, a second ``suggest_*`` returns the
    stored one, nor a step, ``report`` ignores it with a warning.)

    A write that fails (the trial finished elsewhere, a distribution that clashes with the
    study's) raises the error those calls would raise, and stores what they would have
    stored before it: nothing after the failing item, and nothing that a later read replays
    or raises again."""
    values, attrs = intermediate_values or {}, user_attrs or {}
    if not params and not values and not attrs:
        return
    rdb = rdb_backend(storage)
    journal = None if rdb is not None else unwrap(storage, JournalStorage)
    if rdb is not None:
        write = lambda: _write_rdb(rdb, trial_id, params, values, attrs)  # noqa: E731
    elif journal is not None and journal_batches(journal):
        write = lambda: _write_journal(journal, trial_id, params, values, attrs)  # noqa: E731
    else:  # another storage (in-memory, gRPC proxy, a journal not in a file): one call each
        write = lambda: _write_item_by_item(storage, trial_id, params, values, attrs)  # noqa: E731
    if isinstance(storage, ReconnectingStorage):
        storage.retrying("write_trial", write)
    else:
        write()


def write_to_trial(trial: Trial, *, params: Sequence[Param] = (),
                   intermediate_values: dict[int, float] | None = None,
                   user_attrs: dict[str, Any] | None = None) -> None:
    """``write_trial`` for an ``optuna.Trial``, which then has ``user_attrs`` in its own copy
    as ``Trial.set_user_attr`` keeps them (its reporter keeps intermediate values there)."""
    write_trial(storage_of(trial.study), trial_id_of(trial), params=params,
                intermediate_values=intermediate_values, user_attrs=user_attrs)
    cached_frozen_trial(trial).user_attrs.update(user_attrs or {})


def _write_rdb(rdb: RDBStorage, trial_id: int, params: Sequence[Param], values: dict[int, float],
               attrs: dict[str, Any]) -> None:
    """One transaction of a few statements: one check of the trial, one query for earlier
    distributions of the parameters, then one insert per kind (Optuna's own steps
    take two or three statements per item). A parameter's row already there is kept, as
    Optuna's insert is refused; a step's or an attribute's is replaced, as Optuna updates it
    (a retry after a lost answer finds its own rows: the same either way)."""
    models = rdb_models()
    upsert = _upsert_statement(rdb.engine.name)
    clash: ValueError | None = None
    with rdb_session(rdb, True) as session:
        if upsert is None:  # a database without INSERT ... ON CONFLICT (MySQL): Optuna's steps
            _write_rdb_item_by_item(rdb, session, trial_id, params, values, attrs)
            return
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        study_id = trial.study_id  # the row is not readable once the session is closed
        params = _first_of_each(params)
        # PostgreSQL never hands out a deleted study's id again; SQLite may, so it reads each time.
        known = _known_distributions.setdefault(rdb, {}) if rdb.engine.name == "postgresql" else {}
        if params:
            kept, clash = _until_a_clash(session, study_id, params, known)
            if clash is not None:  # Optuna's calls store the parameters before it, then stop
                params, values, attrs = kept, {}, {}
        _insert(session, upsert, models.TrialParamModel, ("trial_id", "param_name"), [
            {"trial_id": trial_id, "param_name": name, "param_value": value,
             "distribution_json": distribution_to_json(distribution)}
            for name, value, distribution in params], replace=False)
        stored = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
        _insert(session, upsert, models.TrialIntermediateValueModel, ("trial_id", "step"), [
            {"trial_id": trial_id, "step": step,
             **dict(zip(("intermediate_value", "intermediate_value_type"), stored(value)))}
            for step, value in values.items()], replace=True)
        _insert(session, upsert, models.TrialUserAttributeModel, ("trial_id", "key"), [
            {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()],
            replace=True)
    for name, _, distribution in params:  # committed: the study now has them stored
        known.setdefault((study_id, name), distribution_to_json(distribution))
    if clash is not None:  # raised once the parameters before it are committed
        raise clash


def _first_of_each(params: Sequence[Param]) -> list[Param]:
    """``params`` without a name's later repeats (one INSERT may not hold a key twice): the
    first value is the one a database keeps."""
    kept: dict[str, Param] = {}
    for param in params:
        kept.setdefault(param[0], param)
    return list(kept.values())


def _insert(session: Session, upsert: Callable[..., Any], model: type[Any], keys: tuple[str, ...],
            rows: list[dict[str, Any]], *, replace: bool) -> None:
    """One INSERT of ``rows`` into ``model``'s table; a row whose ``keys`` exist already
    replaces the stored one's other columns (``replace``) or is left out."""
    if not rows:
        return
    statement = upsert(model).values(rows)
    index = [getattr(model, key) for key in keys]
    if replace:
        statement = statement.on_conflict_do_update(
            index_elements=index,
            set_={column: statement.excluded[column] for column in rows[0] if column not in keys})
    else:
        statement = statement.on_conflict_do_nothing(index_elements=index)
    session.execute(statement)


def _upsert_statement(dialect: str) -> Callable[..., Any] | None:
    """The dialect's ``insert`` (whose statements have ``on_conflict_do_update``), or None."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert
    return None


# A distribution stored for a parameter name, by database and (study id, name): stored
# parameters never change, so one read of a name serves this process's later trials (the
# query scans every parameter of the study: its cost grew with the number of trials).
_known_distributions: weakref.WeakKeyDictionary[RDBStorage, dict[tuple[int, str], str]] = (
    weakref.WeakKeyDictionary())


def _until_a_clash(session: Session, study_id: int, params: Sequence[Param],
                   known: dict[tuple[int, str], str]) -> tuple[list[Param], ValueError | None]:
    """What Optuna checks for each parameter: the study's earlier trials used a compatible
    distribution under that name (one stored distribution per name suffices: they were all
    checked against each other). Names not in ``known`` are read (and added). Returns the
    parameters before the first that fails, and its error (None if none fails)."""
    from optuna.distributions import check_distribution_compatibility, json_to_distribution
    from sqlalchemy import func

    models = rdb_models()
    param = models.TrialParamModel
    unknown = [p[0] for p in params if (study_id, p[0]) not in known]
    if unknown:
        known.update(((study_id, name), stored) for name, stored in
                     session.query(param.param_name, func.min(param.distribution_json))
                     .join(models.TrialModel)
                     .filter(models.TrialModel.study_id == study_id, param.param_name.in_(unknown))
                     .group_by(param.param_name))
    earlier = {name: known[(study_id, name)] for name, _, _ in params if (study_id, name) in known}
    for index, (name, _, distribution) in enumerate(params):
        if name in earlier:
            try:
                check_distribution_compatibility(json_to_distribution(earlier[name]), distribution)
            except ValueError as clash:
                return list(params[:index]), clash
    return list(params), None


def _write_rdb_item_by_item(rdb: RDBStorage, session: Session, trial_id: int, params: Sequence[Param],
                            values: dict[int, float], attrs: dict[str, Any]) -> None:
    for name, value, distribution in params:
        rdb_set_param(rdb, session, trial_id, name, value, distribution)
    for step, value in values.items():
        rdb_set_intermediate_value(rdb, session, trial_id, step, value)
    for key, value in attrs.items():
        rdb_set_user_attr(rdb, session, trial_id, key, value)


def _write_journal(journal: JournalStorage, trial_id: int, params: Sequence[Param], values: dict[int, float],
                   attrs: dict[str, Any]) -> None:
    """One append of the lines Optuna's calls would log, each checked first as Optuna's replay
    checks it (``journal_batch``)."""
    with journal_batch(journal, trial_id) as batch:
        for name, value, distribution in params:
            batch.add("SET_TRIAL_PARAM", {"param_name": name, "param_value_internal": value,
                                          "distribution": distribution_to_json(distribution)})
        for step, value in values.items():
            batch.add("SET_TRIAL_INTERMEDIATE_VALUE", {"step": step, "intermediate_value": value})
        for key, value in attrs.items():
            batch.add("SET_TRIAL_USER_ATTR", {"user_attr": {key: value}})


def _write_item_by_item(storage: BaseStorage, trial_id: int, params: Sequence[Param], values: dict[int, float],
                        attrs: dict[str, Any]) -> None:
    for name, value, distribution in params:
        storage.set_trial_param(trial_id, name, value, distribution)
    for step, value in values.items():
        storage.set_trial_intermediate_value(trial_id, step, value)
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


class DeferredParams(DelegatingStorage):
    """A trial's storage while its parameters are sampled: ``set_trial_param`` is kept here
    (``params``) instead of written, so that they can go out with the trial's context in one
    ``write_trial``. Reads pass through; the trial keeps its own copy of what it sampled."""

    def __init__(self, inner: BaseStorage):
        super().__init__(inner)
        self.params: list[Param] = []

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self.params.append((param_name, param_value_internal, distribution))
