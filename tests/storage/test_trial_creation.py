"""A new trial created in one round trip (hpo.storage.optuna_internals.OneTripTrialCreation),
compared with Optuna's own RDBStorage._create_new_trial on a real PostgreSQL: the same rows,
the same FrozenTrial, unique consecutive numbers under concurrency (also beside Optuna's own
creations), and the start-up writes of ``trial_start_writes`` in the same transaction."""

from __future__ import annotations

import threading

import optuna
import pytest
import sqlalchemy
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo.storage.optuna_internals import OneTripTrialCreation, cached_storage, trial_start_writes
from hpo.storage.urls import engine_kwargs, open_storage, resolve_storage


def one_trip(url: str) -> OneTripTrialCreation:
    return OneTripTrialCreation(url, engine_kwargs=engine_kwargs(url))


def statements_of(engine: sqlalchemy.Engine) -> list[str]:
    """The SQL ``engine`` sends from now on (each entry: one round trip)."""
    sent: list[str] = []
    sqlalchemy.event.listen(engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *rest: sent.append(statement))
    return sent


def test_a_trial_is_created_as_optuna_creates_it_in_one_round_trip(postgres_url):
    ours, optunas = one_trip(postgres_url), optuna.storages.RDBStorage(postgres_url)
    study_id = ours.create_new_study([StudyDirection.MINIMIZE], "same")
    sent = statements_of(ours.engine)
    mine = ours._create_new_trial(study_id)
    assert len(sent) == 1  # the lock and the insert: one query (autocommit: no BEGIN, no COMMIT)
    theirs = optunas._create_new_trial(study_id)
    assert (mine.number, theirs.number) == (0, 1)
    for created, storage in ((mine, ours), (theirs, optunas)):
        stored = storage.get_trial(created._trial_id)
        assert stored == created  # what the creation answered is what Optuna reads back
        assert stored.state == TrialState.RUNNING and stored.datetime_complete is None
        assert not stored.params and not stored.user_attrs and not stored.system_attrs
    assert abs((theirs.datetime_start - mine.datetime_start).total_seconds()) < 60  # both local time
    for storage in (ours, optunas):
        storage.engine.dispose()


def test_a_missing_study_is_refused_as_optuna_refuses_it(postgres_url):
    ours = one_trip(postgres_url)
    ours.create_new_study([StudyDirection.MINIMIZE], "only")
    with pytest.raises(KeyError, match="Record does not exist"):
        optuna.storages.RDBStorage(postgres_url)._create_new_trial(999)
    with pytest.raises(KeyError, match="Record does not exist"):
        ours._create_new_trial(999)
    ours.engine.dispose()


def test_concurrent_creations_beside_optunas_own_get_unique_consecutive_numbers(postgres_url):
    # Each thread its own storage (its own connections): the creations race for the study's
    # row lock. Every other creation is Optuna's own, from a template (as enqueue_trial makes
    # them), which takes the same lock: a count that missed a trial committed by the lock's
    # previous holder would hand out its number twice.
    setup = one_trip(postgres_url)
    study_id = setup.create_new_study([StudyDirection.MINIMIZE], "race")
    setup.engine.dispose()
    template = optuna.trial.create_trial(state=TrialState.WAITING, params={"x": 0.5},
                                         distributions={"x": FloatDistribution(0, 1)})
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def create(rank: int) -> None:
        storage = one_trip(postgres_url)
        try:
            start.wait()
            for i in range(12):
                storage.create_new_trial(study_id, template if (rank + i) % 2 else None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            storage.engine.dispose()

    threads = [threading.Thread(target=create, args=(rank,)) for rank in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    reader = optuna.storages.RDBStorage(postgres_url)
    trials = reader.get_all_trials(study_id, deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(96))
    assert sum(t.state == TrialState.WAITING for t in trials) == 48
    reader.engine.dispose()


def test_a_trial_created_with_start_writes_holds_them_and_its_first_heartbeat(postgres_url):
    storage = open_storage(resolve_storage(postgres_url), reconnect_for=5)  # the worker's layers
    study = optuna.create_study(study_name="start", storage=storage)
    rdb = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=60)  # to read the heartbeats
    worker = {"host": "node-'7", "pid": 12, "rank": 3}  # a quote: quoted, not pasted
    with trial_start_writes(storage, user_attrs={"worker": worker, "n": 1}, heartbeat=True) as created:
        trial = study.ask()
    assert created(trial._trial_id)
    assert trial.user_attrs == {"worker": worker, "n": 1}  # the trial's own copy has them
    stored = rdb.get_trial(trial._trial_id)
    assert stored.user_attrs == {"worker": worker, "n": 1} and stored.state == TrialState.RUNNING
    with rdb.engine.connect() as conn:
        beats = conn.exec_driver_sql("SELECT count(*) FROM trial_heartbeats WHERE trial_id = %s",
                                     (trial._trial_id,)).scalar()
    assert beats == 1
    rdb.record_heartbeat(trial._trial_id)  # Optuna's next beat updates that row
    # Outside the block, and for a trial claimed from the queue, nothing is written with it.
    plain = study.ask()
    assert plain.user_attrs == {} and rdb.get_trial(plain._trial_id).user_attrs == {}
    study.enqueue_trial({"x": 0.25})
    with trial_start_writes(storage, user_attrs={"worker": worker}, heartbeat=True) as created:
        queued = study.ask()
    assert not created(queued._trial_id) and queued.user_attrs == {}
    rdb.engine.dispose()


def test_start_writes_on_a_storage_that_cannot_create_in_one_trip_are_left_to_the_caller(tmp_path):
    storage = open_storage(resolve_storage(str(tmp_path / "j.journal")))
    study = optuna.create_study(study_name="journal", storage=storage)
    with trial_start_writes(storage, user_attrs={"worker": {}}, heartbeat=True) as created:
        trial = study.ask()
    assert not created(trial._trial_id) and trial.user_attrs == {}


def test_optunas_cache_keeps_the_trial_created_in_one_trip(postgres_url):
    cached = cached_storage(one_trip(postgres_url))
    study = optuna.create_study(study_name="cached", storage=cached)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    study.tell(trial, 1.0)
    (done,) = study.get_trials(deepcopy=False)
    assert done.number == 0 and done.state == TrialState.COMPLETE and "x" in done.params
