"""A commit whose answer the connection lost, retried by the reconnecting storage: the trial it
made RUNNING is the caller's, or found by the sweep; and the pruner's view keeps each study's
trials apart."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import optuna
import pytest
import sqlalchemy.exc
from optuna.storages._rdb.models import TrialModel
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.orm import Session

from hpo.storage.optuna_internals import cached_storage, stale_trial_ids
from hpo.storage.proxies import OneReadPerTrial, PrunerView, ReconnectingStorage


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'lost.db'}"


def worker_stack(rdb: optuna.storages.RDBStorage) -> ReconnectingStorage:
    """What ``open_storage(..., reconnect_for=...)`` builds for a worker, retrying quickly."""
    return ReconnectingStorage(OneReadPerTrial(cached_storage(rdb)), "db", give_up_after=10, first_wait=0.01)


@contextlib.contextmanager
def answer_lost(commits: Callable[[object], bool]) -> Iterator[list[int]]:
    """The first commit that flushed an object for which ``commits`` holds reaches the
    database, then its answer is lost: the caller gets the connection error a server restart
    gives. Yields the ids of the trials written in that commit."""
    lost: list[int] = []

    def after_flush(session: Session, _context: object) -> None:
        if not lost and not session.info.get("lose"):
            hits = [obj for obj in (*session.new, *session.dirty) if commits(obj)]
            if hits:
                session.info["lose"] = [obj.trial_id for obj in hits]

    def after_commit(session: Session) -> None:
        if session.info.get("lose") and not lost:
            lost.extend(session.info.pop("lose"))
            reason = Exception("server closed the connection unexpectedly")
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, reason)

    event.listen(Session, "after_flush", after_flush)
    event.listen(Session, "after_commit", after_commit)
    try:
        yield lost
    finally:
        event.remove(Session, "after_flush", after_flush)
        event.remove(Session, "after_commit", after_commit)
    assert lost, "no commit matched: nothing was lost"


def sets_running(obj: object) -> bool:
    return isinstance(obj, TrialModel) and obj.state == TrialState.RUNNING


def test_a_claim_of_a_queued_trial_whose_answer_was_lost_is_the_callers(database_url):
    # Optuna's ask claims a WAITING trial with set_trial_state_values(RUNNING); its retry
    # after a lost answer found the trial RUNNING (its own claim) and answered False, so ask
    # created another trial and left the queued one RUNNING with no one running it.
    rdb = optuna.storages.RDBStorage(database_url)
    study = optuna.create_study(study_name="claim", storage=worker_stack(rdb))
    study.enqueue_trial({"x": 0.25})
    with answer_lost(sets_running) as lost:
        trial = study.ask()
    assert lost == [trial._trial_id]
    assert trial.number == 0 and trial.suggest_float("x", 0, 1) == 0.25
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
    rdb.engine.dispose()


def test_a_claim_another_worker_made_is_not_taken(database_url):
    rdb = optuna.storages.RDBStorage(database_url)
    storage = worker_stack(rdb)
    study = optuna.create_study(study_name="taken", storage=storage)
    study.enqueue_trial({"x": 0.25})
    queued = study.get_trials()[0]._trial_id
    other = optuna.storages.RDBStorage(database_url)
    assert other.set_trial_state_values(queued, TrialState.RUNNING)
    assert storage.set_trial_state_values(queued, TrialState.RUNNING) is False
    assert study.ask().number == 1
    for database in (rdb, other):
        database.engine.dispose()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")  # as hpo's worker
@pytest.mark.filterwarnings("ignore:optuna.storages._heartbeat.fail_stale_trials is experimental")
def test_a_trial_left_running_without_a_heartbeat_is_stale_after_the_grace_period(database_url, monkeypatch):
    # A created trial whose answer was lost: the retry creates another one, and the first is
    # RUNNING without a heartbeat, which Optuna's own stale check passes over for ever.
    rdb = optuna.storages.RDBStorage(database_url)
    rdb.heartbeat_interval, rdb.grace_period = 1, 2  # as hpo's worker sets them
    storage = worker_stack(rdb)
    study = optuna.create_study(study_name="orphan", storage=storage)
    with answer_lost(sets_running) as lost:
        trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    (orphan,) = lost
    assert orphan != trial._trial_id
    assert rdb._get_stale_trial_ids(study._study_id) == []  # Optuna's own check never finds it
    assert stale_trial_ids(storage, study._study_id) == []  # seen without one now: not yet stale
    later = time.monotonic() + 3
    monkeypatch.setattr("hpo.storage.proxies.time.monotonic", lambda: later)
    assert stale_trial_ids(storage, study._study_id) == [orphan]
    optuna.storages.fail_stale_trials(study)  # Optuna's sweep, through hpo's storage
    assert {t._trial_id: t.state for t in study.get_trials()} == {orphan: TrialState.FAIL,
                                                                    trial._trial_id: TrialState.RUNNING}
    rdb.engine.dispose()


def test_the_pruner_view_reads_the_study_it_is_asked_for(tmp_path):
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'two.db'}")
    view = PrunerView(cached_storage(rdb), rdb)
    studies = [optuna.create_study(study_name=name, storage=rdb) for name in ("a", "b")]
    for count, study in enumerate(studies, start=1):
        for _ in range(count):
            study.tell(study.ask(), 1.0)
        study.ask()
    for study in (*studies, *studies):  # each in turn, twice: nothing of one leaks into the other
        seen = view.get_all_trials(study._study_id)
        assert [(t._trial_id, t.state) for t in seen] == [(t._trial_id, t.state) for t in study.get_trials()]
    rdb.engine.dispose()
