"""One-shot API calls leave no database connection open: a notebook that loops over studies
on PostgreSQL would otherwise keep one pool per call until the kernel stops. Counted on a
SQLite file (an RDBStorage with a connection pool, as on PostgreSQL) through SQLAlchemy's
pool events."""

from __future__ import annotations

import optuna
import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool

import hpo
from hpo.study.attrs import CONFIG
from tests.specs import spec_text


@pytest.fixture
def open_connections():
    """The DBAPI connections open now, in any pool of this process."""
    live: set[int] = set()

    def opened(connection, _record):
        live.add(id(connection))

    def closed(connection, _record):
        live.discard(id(connection))

    hooks = [("connect", opened), ("close", closed), ("close_detached", lambda c: live.discard(id(c)))]
    for name, hook in hooks:
        event.listen(Pool, name, hook)
    yield live
    for name, hook in hooks:
        event.remove(Pool, name, hook)


@pytest.fixture
def study(tmp_path):
    """A study in a SQLite file with one trial that has a config but no weights (set up
    before ``open_connections`` counts: each call below opens a storage, and pool, of its own)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("pooled"))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    created = hpo.create_study(spec, storage=url)
    config = {"data": {"name": "digits"}, "model": {"name": "mlp"}, "train": {"epochs": 1}}
    created.study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                                      user_attrs={CONFIG: config}))
    return url


def test_create_study_closes_its_connections_and_the_study_still_works(tmp_path, open_connections):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("fresh"))
    created = hpo.create_study(spec, storage=f"sqlite:///{tmp_path / 'new.db'}")
    assert open_connections == set()
    assert created.study.get_trials() == []  # reconnects on use


def test_results_close_their_connections(study, open_connections):
    with hpo.load_results("pooled", storage=study) as results:
        assert len(results.trials) == 1
        assert open_connections  # open while the results are read
    assert open_connections == set()
    again = hpo.load_results("pooled", storage=study)
    assert again.summary()["name"] == "pooled"
    again.close()
    assert open_connections == set()


def test_load_model_closes_its_connections_when_it_fails_too(study, open_connections):
    with pytest.raises(hpo.HpoError, match="has no stored weights"):
        hpo.load_model("pooled", trial=0, storage=study)
    assert open_connections == set()


def test_confirm_closes_its_connections_when_it_fails_too(study, open_connections):
    with pytest.raises(hpo.HpoError):
        hpo.confirm("pooled", storage=study, say=None)
    assert open_connections == set()


def test_a_warm_start_closes_the_parents_connections_too(study, tmp_path, open_connections):
    spec = tmp_path / "child.yaml"
    spec.write_text(spec_text("child"))
    created = hpo.create_study(spec, storage=study, warm_start="pooled")
    assert created.warm_start is not None
    assert open_connections == set()
