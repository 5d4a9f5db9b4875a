"""The spec's enqueue: key: parameter sets checked against search, queued once at creation."""

from __future__ import annotations

import pytest

from hpo.errors import SpecError
from hpo.spec import load_spec, spec_sha256, spec_to_json
from hpo.spec.enqueue import enqueue_params
from tests.specs import write_spec

SEARCH = {
    "train.lr": "{low: 1.0e-4, high: 1.0e-1, log: true}",
    "model.n_layers": "{low: 1, high: 3}",
    "model.width": "{low: 8, high: 64, step: 8, repeat: model.n_layers}",
    "train.optimizer": "{choices: [sgd, adam]}",
    "train.momentum": "{low: 0.8, high: 0.99, when: {train.optimizer: sgd}}",
}


def _load(tmp_path, enqueue: str):
    return load_spec(write_spec(tmp_path, "s", search=SEARCH), overrides=[f"enqueue={enqueue}"])


def test_partial_and_repeated_sets_become_optuna_params(tmp_path):
    spec = _load(tmp_path, "[{train.lr: 1.0e-2}, {model.n_layers: 2, model.width: [16, 32], train.optimizer: sgd, "
                           "train.momentum: 0.9}]")
    assert [enqueue_params(spec, entry) for entry in spec.enqueue] == [
        {"train.lr": 0.01},
        {"model.n_layers": 2, "model.width[0]": 16, "model.width[1]": 32, "train.optimizer": "sgd",
         "train.momentum": 0.9},
    ]


@pytest.mark.parametrize("enqueue, message", [
    ("[{train.lrr: 0.01}]",
     "enqueue[0].train.lrr: not a searched key (got 'train.lrr'; expected 'train.lr' (close match)"),
    ("[{train.lr: 0.5}]",
     "enqueue[0].train.lr: not a value train.lr is searched over (got 0.5; expected a number in "
     "[0.0001, 0.1])"),
    ("[{train.optimizer: rmsprop}]",
     "enqueue[0].train.optimizer: not a value train.optimizer is searched over (got 'rmsprop'; "
     "expected one of: sgd, adam)"),
    ("[{model.n_layers: 2.5}]",
     "enqueue[0].model.n_layers: not a value model.n_layers is searched over (got 2.5; expected an "
     "integer in [1, 3])"),
    ("[{model.n_layers: 2, model.width: [16, 20]}]",
     "enqueue[0].model.width[1]: not a value model.width is searched over (got 20; expected an "
     "integer in [8, 64] in steps of 8)"),
    ("[{model.n_layers: 2, model.width: [16]}]",
     "enqueue[0].model.width: model.width takes one value per model.n_layers (2 here)"),
    ("[{model.width: [16]}]",
     "enqueue[0].model.width: model.width is repeated model.n_layers times: give model.n_layers in "
     "the same set"),
    ("[{train.optimizer: adam, train.momentum: 0.9}]",
     "enqueue[0].train.momentum: train.momentum is sampled only when train.optimizer is sgd"),
    ("[{model.n_layers: .inf}]",
     "enqueue[0].model.n_layers: not a value model.n_layers is searched over (got .inf; expected an "
     "integer in [1, 3])"),
    ("[{model.n_layers: .nan}]",
     "enqueue[0].model.n_layers: not a value model.n_layers is searched over (got .nan; expected an "
     "integer in [1, 3])"),
    ("[{model.n_layers: 2, model.width: [16, 1.0e+400]}]",
     "enqueue[0].model.width[1]: not a value model.width is searched over (got .inf; expected an "
     "integer in [8, 64] in steps of 8)"),
    ("[{train.lr: -.inf}]",
     "enqueue[0].train.lr: not a value train.lr is searched over (got -.inf; expected a number in "
     "[0.0001, 0.1])"),
    ("[{}]", "enqueue[0]: the set is empty"),
    ("{train.lr: 0.01}", "enqueue: wrong type"),
])
def test_a_set_that_does_not_fit_the_space_is_refused(tmp_path, enqueue, message):
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, enqueue)
    assert caught.value.problems[0].startswith(f"--set enqueue={enqueue}: {message}"), caught.value.problems


def test_a_file_enqueue_problem_names_its_line(tmp_path):
    path = write_spec(tmp_path, "s")
    path.write_text(path.read_text() + "enqueue:\n  - {train.lr: 2.0}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems[0].startswith(f"{path}:12: enqueue[0].train.lr: not a value train.lr is searched over")


def test_more_sets_than_trials_are_refused(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, "s", n_trials=1), overrides=["enqueue=[{train.lr: 0.01}, {train.lr: 0.02}]"])
    assert "2 sets, more than budget.n_trials" in str(caught.value)


def test_an_empty_enqueue_keeps_the_hash_of_a_spec_without_it(tmp_path):
    path = write_spec(tmp_path, "s")
    assert "enqueue" not in spec_to_json(load_spec(path))
    empty = load_spec(path, overrides=["enqueue=[]"])
    assert spec_sha256(spec_to_json(empty)) == spec_sha256(spec_to_json(load_spec(path)))
