"""Reads a worker makes once instead of once per caller: the study shared by a trial's ask and
its sampling, finished trials shared by the budget's and the pruner's views, a parameter's
stored distribution per process, the budget in force shared by the checks around ask."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hpo.storage import proxies
from hpo.storage.proxies import OneReadPerTrial, light_study, rdb_backend
from hpo.storage.urls import open_storage, resolve_storage
from hpo.storage.writes import write_trial


def counted(storage: OneReadPerTrial) -> list[int]:
    """Counts the reads that reach the layer under ``storage``."""
    reads: list[int] = []
    inner = storage.inner
    original = inner.get_all_trials
    inner.get_all_trials = lambda *a, **k: reads.append(1) or original(*a, **k)  # type: ignore[method-assign]
    return reads


def test_an_ask_and_its_sampling_share_one_read_until_a_trial_changes_state(monkeypatch):
    storage = OneReadPerTrial(optuna.storages.InMemoryStorage())
    study = optuna.create_study(study_name="kept", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    reads = counted(storage)
    with storage.one_read():  # the ask
        trial = study.ask()
    with storage.one_read():  # its sampling, milliseconds later
        assert len(study.get_trials(deepcopy=False)) == 2  # the read from before the ask
    assert len(reads) == 1
    study.tell(trial, 0.5)
    with storage.one_read():  # the next ask: after a tell, afresh
        assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 3
    assert len(reads) == 2
    monkeypatch.setattr(OneReadPerTrial, "KEEP_FOR", -1.0)  # too old: afresh too
    with storage.one_read():
        study.get_trials(deepcopy=False)
    assert len(reads) == 3


def test_a_queued_trial_ends_the_kept_read():
    storage = OneReadPerTrial(optuna.storages.InMemoryStorage())
    study = optuna.create_study(study_name="queued", storage=storage)
    reads = counted(storage)
    with storage.one_read():
        study.get_trials(deepcopy=False)
    study.enqueue_trial({"x": 0.5})
    with storage.one_read():
        assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.WAITING]
    assert len(reads) == 2


def test_the_budgets_and_the_pruners_views_read_each_finished_trial_once(postgres_url, monkeypatch):
    storage = open_storage(resolve_storage(postgres_url), reconnect_for=5)
    study = optuna.create_study(study_name="shared-views", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    full_reads: list[set[int]] = []
    original = proxies.rdb_trials_by_id
    monkeypatch.setattr(proxies, "rdb_trials_by_id",
                        lambda rdb, study_id, ids, states: full_reads.append(set(ids)) or original(rdb, study_id, ids,
                                                                                                  states))
    budget, pruner = light_study(study), light_study(study, max_age=1.0)
    assert len(budget.get_trials(deepcopy=False)) == len(pruner.get_trials(deepcopy=False)) == 3
    trial = study.ask()
    study.tell(trial, 0.25)
    assert len(budget.get_trials(deepcopy=False)) == 4
    pruner_view = proxies.unwrap(pruner._storage, proxies.PrunerView)
    assert pruner_view is not None
    pruner_view.max_age = 0.0  # read now, not a second later
    assert [t.value for t in pruner.get_trials(deepcopy=False)][-1] == 0.25
    assert [len(ids) for ids in full_reads] == [3, 1]  # the first three, then the new one: once each
    rdb_backend(storage).engine.dispose()


def test_a_parameters_stored_distribution_is_read_once_per_process(postgres_url):
    storage = open_storage(resolve_storage(postgres_url), reconnect_for=5)
    study = optuna.create_study(study_name="known-distributions", storage=storage)
    engine = rdb_backend(storage).engine
    queries: list[str] = []

    def count(conn, cursor, statement, *args):
        if "min(trial_params.distribution_json)" in statement:
            queries.append(statement)

    sqlalchemy.event.listen(engine, "before_cursor_execute", count)
    lr = ("lr", 0.01, FloatDistribution(1e-4, 1e-1, log=True))
    for _ in range(3):
        write_trial(storage, study.ask()._trial_id, params=[lr])
    assert len(queries) == 1  # the first trial's; the later ones know what the study stored
    clash = [("lr", 1.0, CategoricalDistribution(["a", "b"]))]
    try:
        write_trial(storage, study.ask()._trial_id, params=clash)
    except ValueError as refused:
        assert "Cannot set different distribution kind" in str(refused)
    else:
        raise AssertionError("a clashing distribution was accepted")
    assert len(queries) == 1
    sqlalchemy.event.remove(engine, "before_cursor_execute", count)
    engine.dispose()


def test_ask_takes_the_trial_it_created_from_the_creation_not_a_read(postgres_url):
    storage = open_storage(resolve_storage(postgres_url), reconnect_for=5)  # hpo's worker stack
    study = optuna.create_study(study_name="created", storage=storage)
    engine = rdb_backend(storage).engine
    trial_reads: list[str] = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().startswith("SELECT trials.trial_id AS trials_trial_id") and (
                "WHERE trials.trial_id =" in statement):  # one trial by its id
            trial_reads.append(statement)

    sqlalchemy.event.listen(engine, "before_cursor_execute", count)
    trial = study.ask()
    assert trial_reads == []  # Optuna's own ask reads the new trial back by its id
    sqlalchemy.event.remove(engine, "before_cursor_execute", count)
    stored = optuna.storages.RDBStorage(postgres_url).get_trial(trial._trial_id)
    mine = storage.get_trial(trial._trial_id)  # later reads: the database's, as before
    assert (mine.number, mine.state, mine.datetime_start) == (stored.number, stored.state, stored.datetime_start)
    ours = trial._cached_frozen_trial
    assert (ours.number, ours.state, ours.datetime_start, ours.params, ours.user_attrs, ours.system_attrs) == (
        stored.number, TrialState.RUNNING, stored.datetime_start, {}, {}, {})
    trial.suggest_float("x", 0, 1)
    study.tell(trial, 0.5)
    assert storage.get_trial(trial._trial_id).state == TrialState.COMPLETE
    engine.dispose()


def test_hpos_tell_stores_what_optunas_stores_without_reading_the_trial_back(postgres_url):
    from hpo.storage.optuna_internals import tell

    storage = open_storage(resolve_storage(postgres_url), reconnect_for=5)  # hpo's worker stack
    study = optuna.create_study(study_name="told", storage=storage)
    engine = rdb_backend(storage).engine
    sent: list[str] = []

    def count(conn, cursor, statement, *args):
        sent.append(statement)

    told = {}
    for how in ("optuna", "hpo"):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.report(0.25, 1)
        sent.clear()
        sqlalchemy.event.listen(engine, "before_cursor_execute", count)
        study.tell(trial, 0.5) if how == "optuna" else tell(study, trial, 0.5)
        sqlalchemy.event.remove(engine, "before_cursor_execute", count)
        told[how] = (len(sent), storage.get_trial(trial._trial_id))
    (optunas_statements, optunas), (hpos_statements, hpos) = told["optuna"], told["hpo"]
    assert (hpos.state, hpos.values, hpos.params.keys(), hpos.intermediate_values, hpos.user_attrs) == (
        optunas.state, optunas.values, optunas.params.keys(), optunas.intermediate_values, optunas.user_attrs)
    assert hpos.datetime_complete is not None
    assert optunas_statements - hpos_statements >= 6  # Optuna's read-back: the trial and its five tables
    pruned = study.ask()
    pruned.report(0.125, 1)
    tell(study, pruned, state=TrialState.PRUNED)  # a pruned trial's value: its last reported one
    assert storage.get_trial(pruned._trial_id).values == [0.125]
    twice = study.ask()
    tell(study, twice, 0.5)
    with pytest.raises(ValueError, match="Cannot tell a COMPLETE trial"):  # a finished trial is refused alike
        tell(study, twice, 0.75)
    engine.dispose()
