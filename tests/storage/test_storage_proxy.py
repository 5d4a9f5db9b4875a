"""The storage wrappers: reconnecting with bounded backoff, the pruner's cheap view, and one
read of the study per trial's sampling."""

from __future__ import annotations

import time

import optuna
import pytest
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import TrialState

from hpo.errors import StorageError
from hpo.storage.proxies import (
    OneReadPerTrial,
    PrunerView,
    ReconnectingStorage,
    is_connection_error,
    one_read_of_the_study,
    rdb_backend,
)
from hpo.storage.urls import open_storage, resolve_storage


def connection_lost() -> StorageInternalError:
    """What RDBStorage raises when the server went away mid-call."""
    try:
        try:
            reason = Exception("server closed the connection unexpectedly")
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, reason)
        except sqlalchemy.exc.OperationalError as exc:
            raise StorageInternalError("An exception is raised during the commit.") from exc
    except StorageInternalError as exc:
        return exc


class Flaky:
    """A storage whose first ``failures`` calls fail as a lost connection would."""

    def __init__(self, failures: int, error=connection_lost):
        self.failures, self.error, self.calls = failures, error, 0
        self.state = TrialState.RUNNING

    def get_all_studies(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        return ["ok"]

    def set_trial_state_values(self, trial_id, state, values=None):
        self.calls += 1
        if self.calls == 1:  # committed, but the answer was lost
            self.state = state
            raise connection_lost()
        if self.state != TrialState.RUNNING:
            raise UpdateFinishedTrialError("already finished")
        self.state = state
        return True

    def get_trial(self, trial_id):
        return type("T", (), {"state": self.state})()


def test_a_call_is_retried_with_backoff_until_the_database_answers(caplog):
    inner = Flaky(failures=3)
    storage = ReconnectingStorage(inner, "postgresql://hpo:***@db/hpo", give_up_after=10, first_wait=0.01)
    started = time.monotonic()
    assert storage.get_all_studies() == ["ok"]
    assert inner.calls == 4
    assert 0.07 <= time.monotonic() - started < 2  # 0.01 + 0.02 + 0.04
    assert storage.last_outage_end > started
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable (server closed the connection unexpectedly); retrying in" in m for m in messages) == 3
    assert any("reachable again" in m for m in messages)


def test_waiting_is_bounded_and_ends_in_one_clear_error():
    storage = ReconnectingStorage(Flaky(failures=1000), "postgresql://hpo:***@db/hpo", give_up_after=0.2,
                                  first_wait=0.05)
    with pytest.raises(StorageError, match=r"^lost the connection to postgresql://hpo:\*\*\*@db/hpo for 0 s "
                       r"and gave up \(after 0.2 s\): server closed the connection unexpectedly$"):
        storage.get_all_studies()


def test_other_errors_are_not_retried():
    inner = Flaky(failures=5, error=lambda: ValueError("bad value"))
    storage = ReconnectingStorage(inner, "db", give_up_after=10, first_wait=0.01)
    with pytest.raises(ValueError):
        storage.get_all_studies()
    assert inner.calls == 1
    assert not is_connection_error(ValueError("x")) and is_connection_error(connection_lost())


def test_a_state_change_that_committed_before_the_connection_dropped_counts_as_done():
    inner = Flaky(failures=0)
    storage = ReconnectingStorage(inner, "db", give_up_after=10, first_wait=0.01)
    assert storage.set_trial_state_values(1, TrialState.COMPLETE) is True
    assert inner.state == TrialState.COMPLETE and inner.calls == 2


def test_reconnecting_storage_runs_a_real_study(postgres_url):
    storage = open_storage(resolve_storage(postgres_url), reconnect_for=30)
    assert isinstance(storage, ReconnectingStorage) and rdb_backend(storage) is not None
    study = optuna.create_study(study_name="proxy", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    rdb_backend(storage).engine.dispose()


def _fill(study, *, finished: int, running: int, epochs: int):
    """Finished trials (every other one pruned) and running ones, each with ``epochs``
    reported values and a rung attribute like successive halving writes."""
    storage = study._storage
    for i in range(finished + running):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        for step in range(1, epochs + 1):
            trial.report(step * trial.params["x"], step)
        storage.set_trial_system_attr(trial._trial_id, "completed_rung_0", trial.params["x"])
        if i < finished:
            study.tell(trial, trial.params["x"] if i % 2 else None,
                       state=TrialState.COMPLETE if i % 2 else TrialState.PRUNED)


def test_the_pruner_view_reads_what_pruners_need_and_skips_running_curves(postgres_url):
    rdb = optuna.storages.RDBStorage(postgres_url)
    study = optuna.create_study(study_name="view", storage=rdb)
    _fill(study, finished=6, running=4, epochs=20)
    view = PrunerView(_CachedStorage(rdb), rdb)
    full = {t.number: t for t in study.get_trials()}
    seen = {t.number: t for t in view.get_all_trials(study._study_id)}
    assert seen.keys() == full.keys()
    for number, trial in full.items():
        light = seen[number]
        assert (light.state, light.system_attrs, light._trial_id) == (trial.state, trial.system_attrs, trial._trial_id)
        if trial.state.is_finished():
            assert light.intermediate_values == trial.intermediate_values and light.value == trial.value
        else:
            assert light.intermediate_values == {} and len(trial.intermediate_values) == 20
    # New trials and ones that finish after the first read are picked up.
    running = [t for t in full.values() if t.state == TrialState.RUNNING]
    study.tell(running[0].number, 0.5)
    _fill(study, finished=1, running=1, epochs=3)
    again = {t.number: t for t in view.get_all_trials(study._study_id, states=(TrialState.COMPLETE,))}
    assert again.keys() == {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert again[running[0].number].value == 0.5
    # The same pruning decisions as Optuna's own read, for Hyperband and the median rule.
    for pruner in (optuna.pruners.HyperbandPruner(min_resource=1, max_resource=20),
                   optuna.pruners.MedianPruner(n_startup_trials=1)):
        viewed = optuna.Study(study_name="view", storage=view, pruner=pruner)
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            assert pruner.prune(viewed, trial) == pruner.prune(study, trial)
    rdb.engine.dispose()


def test_a_view_with_max_age_reuses_its_read_for_that_long(postgres_url, monkeypatch):
    rdb = optuna.storages.RDBStorage(postgres_url)
    study = optuna.create_study(study_name="aged", storage=rdb)
    _fill(study, finished=2, running=1, epochs=2)
    clock = [1000.0]
    monkeypatch.setattr("hpo.storage.proxies.time.monotonic", lambda: clock[0])
    aged, fresh = PrunerView(_CachedStorage(rdb), rdb, max_age=1.0), PrunerView(_CachedStorage(rdb), rdb)
    assert len(aged.get_all_trials(study._study_id)) == len(fresh.get_all_trials(study._study_id)) == 3
    _fill(study, finished=1, running=0, epochs=2)
    clock[0] += 0.5
    assert len(aged.get_all_trials(study._study_id)) == 3  # within max_age: the earlier read
    assert len(fresh.get_all_trials(study._study_id)) == 4
    clock[0] += 0.5
    assert len(aged.get_all_trials(study._study_id)) == 4
    rdb.engine.dispose()


def test_one_read_serves_a_trials_sampling_and_nothing_after_it(postgres_url):
    storage = open_storage(resolve_storage(postgres_url), reconnect_for=5)  # hpo's worker stack
    assert isinstance(storage._inner, OneReadPerTrial)
    study = optuna.create_study(study_name="one-read", storage=storage)
    reads = []
    inner = storage._inner._inner
    original = inner.get_all_trials
    inner.get_all_trials = lambda *a, **k: reads.append(1) or original(*a, **k)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    with one_read_of_the_study(study._storage):
        before = len(reads)
        trial = study.ask()
        for i in range(5):  # each parameter on its own: the sampler reads the study each time
            trial.suggest_float(f"p{i}", 0, 1)
        assert len(reads) - before == 1
        assert len(study.get_trials()) == 3  # the one read came before this trial existed
    study.tell(trial, 0.5)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4  # read afresh again
    rdb_backend(storage).engine.dispose()


def test_one_read_belongs_to_the_thread_that_opened_it():
    """The heartbeat thread shares the worker's storage: its sweep reads afresh while the
    main thread samples from one read, and a read ending under it does not break it."""
    import threading

    storage = OneReadPerTrial(optuna.storages.InMemoryStorage())
    study = optuna.create_study(study_name="threads", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    seen = []
    with storage.one_read():
        assert len(storage.get_all_trials(study._study_id)) == 2  # the main thread's read
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={
            "x": optuna.distributions.FloatDistribution(0, 1)}, value=0.5))
        assert len(storage.get_all_trials(study._study_id)) == 2  # still the one read
        other = threading.Thread(target=lambda: seen.append(len(storage.get_all_trials(study._study_id))))
        other.start()
        other.join()
    assert seen == [3]  # the other thread read afresh
