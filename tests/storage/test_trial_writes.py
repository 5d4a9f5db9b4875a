"""Batched trial writes leave a trial exactly as Optuna's one-by-one calls do, on every storage."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hpo.storage.urls import open_storage, resolve_storage
from hpo.storage.writes import DeferredParams, write_trial

PARAMS = [
    ("train.lr", 0.01, FloatDistribution(1e-4, 1e-1, log=True)),
    ("model.filters[0]", 16.0, IntDistribution(8, 64, log=True)),
    ("train.optimizer", 1.0, CategoricalDistribution(["sgd", "adam"])),
]
ATTRS = {"config": {"train": {"lr": 0.01}}, "seed": 0, "device": "cpu", "curves": {"val_loss": [1.0, 0.5]}}
VALUES = {1: 0.5, 2: 0.75, 3: float("inf"), 4: float("-inf")}


KINDS = ["journal", pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite", "in-memory"]


@pytest.fixture(params=KINDS)
def make_storage(request, tmp_path):
    """(kind, a factory of storage objects all on one store): each storage hpo writes to."""
    kind = request.param
    if kind == "journal":
        return kind, lambda: optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "s.journal")))
    if kind == "postgresql":
        url = request.getfixturevalue("postgres_url")
        return kind, lambda: open_storage(resolve_storage(url), reconnect_for=5)  # hpo's wrappers
    if kind == "sqlite":
        return kind, lambda: optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    return kind, optuna.storages.InMemoryStorage


def test_one_write_equals_optuna_one_call_each(make_storage):
    kind, make = make_storage
    storage = make()
    study = optuna.create_study(study_name=f"w-{kind}", storage=storage)
    ours, theirs = study.ask(), study.ask()
    write_trial(study._storage, ours._trial_id, params=PARAMS, intermediate_values=VALUES, user_attrs=ATTRS)
    write_trial(study._storage, ours._trial_id, intermediate_values={5: 0.9}, user_attrs={"seed": 1})
    for name, value, distribution in PARAMS:
        study._storage.set_trial_param(theirs._trial_id, name, value, distribution)
    for step, value in {**VALUES, 5: 0.9}.items():
        study._storage.set_trial_intermediate_value(theirs._trial_id, step, value)
    for key, value in {**ATTRS, "seed": 1}.items():
        study._storage.set_trial_user_attr(theirs._trial_id, key, value)
    reader = make() if kind != "in-memory" else study._storage  # what a fresh reader sees
    a, b = (reader.get_trial(t._trial_id) for t in (ours, theirs))
    assert (a.params, a.distributions, a.user_attrs, a.intermediate_values) == (
        b.params, b.distributions, b.user_attrs, b.intermediate_values)
    assert a.params == {"train.lr": 0.01, "model.filters[0]": 16, "train.optimizer": "adam"}
    assert a.intermediate_values == {**VALUES, 5: 0.9} and a.user_attrs["seed"] == 1


def test_a_clashing_distribution_is_refused_as_optuna_refuses_it(make_storage):
    kind, make = make_storage
    study = optuna.create_study(study_name=f"c-{kind}", storage=make())
    first, second = study.ask(), study.ask()
    write_trial(study._storage, first._trial_id, params=PARAMS[:1])
    clash = [("train.lr", 1.0, CategoricalDistribution(["a", "b"]))]
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        write_trial(study._storage, second._trial_id, params=clash)


def test_a_finished_trial_is_refused_as_optuna_refuses_it(make_storage):
    kind, make = make_storage
    study = optuna.create_study(study_name=f"f-{kind}", storage=make())
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        write_trial(study._storage, trial._trial_id, user_attrs={"late": True})


def test_sampling_through_deferred_params_writes_nothing_until_asked(tmp_path):
    def stored_params(trial_id: int) -> dict:
        # A fresh reader: the writer's own journal object shares its trial with the Trial.
        fresh = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "d.journal")))
        return fresh.get_trial(trial_id).params

    study = optuna.create_study(storage=optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "d.journal"))))
    trial = study.ask()
    deferred = DeferredParams(trial.storage)
    trial.storage = deferred
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    assert trial.suggest_float("lr", 1e-4, 1e-1, log=True) == lr  # the trial remembers it
    assert stored_params(trial._trial_id) == {}
    trial.storage = deferred._inner
    write_trial(trial.storage, trial._trial_id, params=deferred.params)
    assert stored_params(trial._trial_id) == {"lr": lr}


@pytest.mark.parametrize("make_storage", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_write_repeated_after_a_lost_answer_changes_nothing(make_storage):
    # ReconnectingStorage repeats a call whose answer was lost; the repeat must not fail (the
    # journal and in-memory stores are not behind ReconnectingStorage).
    kind, make = make_storage
    study = optuna.create_study(study_name=f"r-{kind}", storage=make())
    trial = study.ask()
    for _ in range(2):
        write_trial(study._storage, trial._trial_id, params=PARAMS, intermediate_values=VALUES, user_attrs=ATTRS)
    stored = make().get_trial(trial._trial_id)
    assert (stored.params["train.lr"], stored.intermediate_values, stored.user_attrs) == (0.01, VALUES, ATTRS)


# --- A write that fails, or repeats what the trial has: as Optuna's own calls ----------------

def one_call_each(storage, trial_id: int, *, params=(), intermediate_values=None, user_attrs=None) -> None:
    """What ``write_trial`` stands for: Optuna's call per item, in its order, stopping at the
    first error (which it raises)."""
    for name, value, distribution in params:
        storage.set_trial_param(trial_id, name, value, distribution)
    for step, value in (intermediate_values or {}).items():
        storage.set_trial_intermediate_value(trial_id, step, value)
    for key, value in (user_attrs or {}).items():
        storage.set_trial_user_attr(trial_id, key, value)


def stored(reader, trial_id: int) -> tuple:
    trial = reader.get_trial(trial_id)
    return trial.params, trial.distributions, trial.intermediate_values, trial.user_attrs


def test_a_batch_that_fails_midway_keeps_what_optunas_calls_keep(make_storage):
    # The third parameter clashes with an earlier trial's: Optuna's calls stop there, with the
    # first two stored and nothing after them.
    kind, make = make_storage
    study = optuna.create_study(study_name=f"m-{kind}", storage=make())
    storage = study._storage
    write_trial(storage, study.ask()._trial_id, params=PARAMS[:1])
    ours, theirs = study.ask(), study.ask()
    batch = [PARAMS[1], PARAMS[2], ("train.lr", 1.0, CategoricalDistribution(["a", "b"])), ("late", 0.5,
             FloatDistribution(0, 1))]
    with pytest.raises(ValueError, match="Cannot set different distribution kind") as optunas:
        one_call_each(storage, theirs._trial_id, params=batch, intermediate_values=VALUES, user_attrs=ATTRS)
    with pytest.raises(type(optunas.value), match="Cannot set different distribution kind"):
        write_trial(storage, ours._trial_id, params=batch, intermediate_values=VALUES, user_attrs=ATTRS)
    storage.get_all_trials(study._study_id)  # the writer's next sync raises nothing again
    for reader in (storage, make() if kind != "in-memory" else storage):
        assert stored(reader, ours._trial_id) == stored(reader, theirs._trial_id)
        assert reader.get_trial(ours._trial_id).params == {"model.filters[0]": 16, "train.optimizer": "adam"}


def test_a_batch_to_a_trial_finished_elsewhere_fails_once_and_leaves_nothing(make_storage):
    # Another process (a worker that swept it, the dashboard) finished the trial: the writer
    # gets Optuna's error once; its later reads and writes of the study go on as after
    # Optuna's own call.
    kind, make = make_storage
    writer = make()
    study = optuna.create_study(study_name=f"e-{kind}", storage=writer)
    ours, theirs, other = study.ask(), study.ask(), study.ask()
    elsewhere = make() if kind != "in-memory" else writer
    for trial in (ours, theirs):
        elsewhere.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError) as optunas:
        one_call_each(study._storage, theirs._trial_id, params=PARAMS, intermediate_values=VALUES,
                      user_attrs=ATTRS)
    with pytest.raises(type(optunas.value)):
        write_trial(study._storage, ours._trial_id, params=PARAMS, intermediate_values=VALUES, user_attrs=ATTRS)
    study.get_trials()  # no error replayed
    write_trial(study._storage, other._trial_id, params=PARAMS, user_attrs={"seed": 3})
    assert study._storage.get_trial(other._trial_id).user_attrs == {"seed": 3}
    for reader in (study._storage, make() if kind != "in-memory" else writer):
        assert stored(reader, ours._trial_id) == stored(reader, theirs._trial_id) == ({}, {}, {}, {})


def test_a_repeated_parameter_or_step_is_stored_as_optunas_calls_store_it(make_storage):
    # A database keeps a parameter's first row (Optuna's second insert is refused), the journal
    # and the in-memory store the last; a step and an attribute take the last value everywhere.
    kind, make = make_storage
    study = optuna.create_study(study_name=f"p-{kind}", storage=make())
    lr = FloatDistribution(1e-4, 1e-1, log=True)
    ours, theirs = study.ask(), study.ask()
    first = {"params": [("train.lr", 0.01, lr), ("train.lr", 0.02, lr)], "intermediate_values": {1: 0.5},
             "user_attrs": {"seed": 0}}
    again = {"params": [("train.lr", 0.03, lr)], "intermediate_values": {1: 0.9, 2: 0.1}, "user_attrs": {"seed": 1}}
    for write in (first, again):
        write_trial(study._storage, ours._trial_id, **write)
        one_call_each(study._storage, theirs._trial_id, **write)
    reader = make() if kind != "in-memory" else study._storage
    assert stored(reader, ours._trial_id) == stored(reader, theirs._trial_id)
    expected_lr = 0.01 if kind in ("sqlite", "postgresql") else 0.03
    assert stored(reader, ours._trial_id)[::2] == ({"train.lr": expected_lr}, {1: 0.9, 2: 0.1})


def test_no_other_process_appends_between_a_journal_batchs_check_and_its_append(tmp_path, monkeypatch):
    # Another process finishing the trial while the batch is being checked waits for the
    # file lock: the batch's lines land before its line, all checked against what is there.
    import threading
    import time

    from hpo.storage import optuna_internals

    path = str(tmp_path / "race.journal")
    writer = optuna.storages.JournalStorage(JournalFileBackend(path))
    study = optuna.create_study(study_name="race", storage=writer)
    trial = study.ask()
    elsewhere = optuna.storages.JournalStorage(JournalFileBackend(path))
    finisher = threading.Thread(target=elsewhere.set_trial_state_values, args=(trial._trial_id, TrialState.FAIL))
    add = optuna_internals.JournalBatch.add

    def add_while_another_process_finishes(self, operation, fields):
        if not finisher.is_alive() and not finisher.ident:
            finisher.start()
            time.sleep(0.2)  # its append would have gone through by now without the lock
        add(self, operation, fields)

    monkeypatch.setattr(optuna_internals.JournalBatch, "add", add_while_another_process_finishes)
    write_trial(writer, trial._trial_id, params=PARAMS, intermediate_values=VALUES, user_attrs=ATTRS)
    finisher.join(timeout=10)
    fresh = optuna.storages.JournalStorage(JournalFileBackend(path)).get_trial(trial._trial_id)
    assert fresh.state == TrialState.FAIL and fresh.intermediate_values == VALUES and fresh.user_attrs == ATTRS
