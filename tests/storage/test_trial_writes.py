"""Batched trial writes leave a trial exactly as Optuna's one-by-one calls do, on every storage."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend

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
