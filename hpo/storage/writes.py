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
from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution, distribution_to_json

from hpo.storage.proxies import DelegatingStorage, ReconnectingStorage, rdb_backend

Param = tuple[str, float, BaseDistribution]  # name, value in Optuna's internal repr, distribution


def write_trial(storage: Any, trial_id: int, *, params: Sequence[Param] = (),
                intermediate_values: dict[int, float] | None = None,
                user_attrs: dict[str, Any] | None = None) -> None:
    """Set ``params``, ``intermediate_values`` (step -> value) and ``user_attrs`` of a
    running trial together."""
    values, attrs = intermediate_values or {}, user_attrs or {}
    if not params and not values and not attrs:
        return
    rdb = rdb_backend(storage)
    journal = None if rdb is not None else _journal_backend(storage)
    if rdb is not None:
        write = lambda: _write_rdb(rdb, trial_id, params, values, attrs)  # noqa: E731
    elif journal is not None:
        write = lambda: _write_journal(journal, trial_id, params, values, attrs)  # noqa: E731
    else:  # another storage (in-memory, gRPC proxy): one call each
        def write() -> None:
            for name, value, distribution in params:
                storage.set_trial_param(trial_id, name, value, distribution)
            for step, value in values.items():
                storage.set_trial_intermediate_value(trial_id, step, value)
            for key, value in attrs.items():
                storage.set_trial_user_attr(trial_id, key, value)
    if isinstance(storage, ReconnectingStorage):
        storage.retrying("write_trial", write)
    else:
        write()



def write_to_trial(trial: Any, *, params: Sequence[Param] = (),
                   intermediate_values: dict[int, float] | None = None,
                   user_attrs: dict[str, Any] | None = None) -> None:
    """``write_trial`` for an ``optuna.Trial``, which then has ``user_attrs`` in its own copy
    as ``Trial.set_user_attr`` keeps them (its reporter keeps intermediate values there)."""
    write_trial(trial.study._storage, trial._trial_id, params=params,
                intermediate_values=intermediate_values, user_attrs=user_attrs)
    trial._cached_frozen_trial.user_attrs.update(user_attrs or {})

def _write_rdb(rdb: Any, trial_id: int, params: Sequence[Param], values: dict[int, float],
               attrs: dict[str, Any]) -> None:
    """One transaction of a few statements: one check of the trial, one query for earlier
    distributions of the parameters, then one upsert per kind (Optuna's own steps
    take two or three statements per item)."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    upsert = _upsert_statement(rdb.engine.name)
    with _create_scoped_session(rdb.scoped_session, True) as session:
        if upsert is None:  # a database without INSERT ... ON CONFLICT (MySQL): Optuna's steps
            _write_rdb_item_by_item(rdb, session, trial_id, params, values, attrs)
            return
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        if params:
            _check_against_earlier_distributions(session, trial.study_id, params)
        _upsert(session, upsert, models.TrialParamModel, ("trial_id", "param_name"), [
            {"trial_id": trial_id, "param_name": name, "param_value": value,
             "distribution_json": distribution_to_json(distribution)}
            for name, value, distribution in params])
        stored = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
        _upsert(session, upsert, models.TrialIntermediateValueModel, ("trial_id", "step"), [
            {"trial_id": trial_id, "step": step,
             **dict(zip(("intermediate_value", "intermediate_value_type"), stored(value)))}
            for step, value in values.items()])
        _upsert(session, upsert, models.TrialUserAttributeModel, ("trial_id", "key"), [
            {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()])


def _upsert(session: Any, upsert: Any, model: Any, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """One INSERT of ``rows`` into ``model``'s table; a row whose ``keys`` exist already
    replaces the stored one's other columns."""
    if not rows:
        return
    statement = upsert(model).values(rows)
    session.execute(statement.on_conflict_do_update(
        index_elements=[getattr(model, key) for key in keys],
        set_={column: statement.excluded[column] for column in rows[0] if column not in keys}))


def _upsert_statement(dialect: str) -> Any | None:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return None
    return insert


def _check_against_earlier_distributions(session: Any, study_id: int, params: Sequence[Param]) -> None:
    """What Optuna checks for each new parameter: the study's earlier trials used a
    compatible distribution under that name (one stored distribution per name suffices:
    they were all checked against each other)."""
    from optuna.distributions import check_distribution_compatibility, json_to_distribution
    from optuna.storages._rdb import models
    from sqlalchemy import func

    param = models.TrialParamModel
    earlier = dict(
        session.query(param.param_name, func.min(param.distribution_json))
        .join(models.TrialModel)
        .filter(models.TrialModel.study_id == study_id, param.param_name.in_([p[0] for p in params]))
        .group_by(param.param_name)
        .all()
    )
    for name, _, distribution in params:
        if name in earlier:
            check_distribution_compatibility(json_to_distribution(earlier[name]), distribution)


def _write_rdb_item_by_item(rdb: Any, session: Any, trial_id: int, params: Sequence[Param],
                            values: dict[int, float], attrs: dict[str, Any]) -> None:
    from optuna.storages._rdb import models

    for name, value, distribution in params:
        rdb._set_trial_param_without_commit(session, trial_id, name, value, distribution)
    for step, value in values.items():
        rdb._set_trial_intermediate_value_without_commit(session, trial_id, step, value)
    for key, value in attrs.items():
        rdb._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, key, value)


def _write_journal(journal: Any, trial_id: int, params: Sequence[Param], values: dict[int, float],
                   attrs: dict[str, Any]) -> None:
    from optuna.storages.journal._storage import JournalOperation

    with journal._thread_lock:
        entry = {"worker_id": journal._replay_result.worker_id, "trial_id": trial_id}
        logs = [{"op_code": JournalOperation.SET_TRIAL_PARAM, **entry, "param_name": name,
                 "param_value_internal": value, "distribution": distribution_to_json(distribution)}
                for name, value, distribution in params]
        logs += [{"op_code": JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE, **entry, "step": step,
                  "intermediate_value": value} for step, value in values.items()]
        logs += [{"op_code": JournalOperation.SET_TRIAL_USER_ATTR, **entry, "user_attr": {key: value}}
                 for key, value in attrs.items()]
        journal._backend.append_logs(logs)
        journal._sync_with_backend()


def _journal_backend(storage: Any) -> Any | None:
    """The JournalStorage under ``storage``'s wrappers, or None."""
    from optuna.storages import JournalStorage

    while storage is not None and not isinstance(storage, JournalStorage):
        storage = getattr(storage, "_inner", None)
    return storage


class DeferredParams(DelegatingStorage):
    """A trial's storage while its parameters are sampled: ``set_trial_param`` is kept here
    (``params``) instead of written, so that they can go out with the trial's context in one
    ``write_trial``. Reads pass through; the trial keeps its own copy of what it sampled."""

    def __init__(self, inner: Any):
        super().__init__(inner)
        self.params: list[Param] = []

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self.params.append((param_name, param_value_internal, distribution))
