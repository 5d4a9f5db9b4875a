"""hpo study create --warm-start OTHER --top K: a new study starts from another's results."""

from __future__ import annotations

import optuna
import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.errors import UsageError
from hpo.results.warm_start import create_warm_started
from hpo.spec import load_spec
from hpo.storage.urls import resolve_storage
from hpo.study.attrs import CONFIG, WARM_START
from hpo.study.studies import create_study, load_study
from hpo.worker.budget import budget_state
from tests.specs import write_spec

LR = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)


@pytest.fixture
def target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    return resolve_storage(None)


def _parent(tmp_path, target, values: dict[float, float], data: dict | None = None) -> None:
    """A finished parent study: one complete trial per (lr, accuracy), with the config a worker
    records (``data``: its data section beyond the name), plus a failed trial (never taken)."""
    study, _ = create_study(load_spec(write_spec(tmp_path, "parent")), target)
    for lr, accuracy in values.items():
        config = {"train": {"lr": lr, "epochs": 1}, "model": {"name": "mlp"},
                  "data": {"name": "digits", **(data or {})}}
        study.add_trial(optuna.trial.create_trial(
            value=accuracy, params={"train.lr": lr}, distributions={"train.lr": LR},
            user_attrs={CONFIG: config}, intermediate_values={1: accuracy}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))


def test_the_best_fitting_configurations_run_first_and_the_rest_inform_the_sampler(tmp_path, target):
    _parent(tmp_path, target, {0.05: 0.9, 0.002: 0.8, 0.09: 0.95, 0.0005: 0.5, 0.08: 0.3})
    child = load_spec(write_spec(tmp_path, "child", n_trials=2), overrides=["search.train.lr.high=0.06"])
    study, created, report = create_warm_started(child, target, parent="parent", top=2)
    assert created and report is not None
    assert report.queued == [{"train.lr": 0.05}, {"train.lr": 0.002}]  # 0.09 (the best) no longer fits
    assert report.added == 3
    assert report.left_out == ["2 trials left out: train.lr outside [0.0001, 0.06] (e.g. train.lr=0.09)"]
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    added = [t for t in trials if t.user_attrs.get(WARM_START)]
    assert len(waiting) == 2 and [t.number for t in waiting] == [0, 1]  # asked for first
    assert sorted(t.params["train.lr"] for t in added) == [0.0005, 0.002, 0.05]
    assert all(t.distributions["train.lr"] == optuna.distributions.FloatDistribution(1e-4, 0.06, log=True)
               for t in added)
    assert all(t.intermediate_values == {1: t.value} and t.user_attrs[CONFIG]["train"]["lr"] == t.params["train.lr"]
               for t in added)
    assert {t.user_attrs[WARM_START]["study"] for t in added} == {"parent"}
    # The added trials count towards no budget: two own trials are still to run.
    state = budget_state(study, load_study("child", target).spec.budget)
    assert (state.finished, state.claimed, state.exhausted) == (0, 2, False)


def test_the_cli_lists_what_was_taken_and_show_counts_it_apart(tmp_path, target):
    _parent(tmp_path, target, {0.05: 0.9, 0.002: 0.8})
    path = write_spec(tmp_path, "child")
    result = CliRunner().invoke(cli, ["study", "create", str(path), "--warm-start", "parent", "--top", "1"])
    assert result.exit_code == 0, result.output
    assert ("Warm start from 'parent': its best 1 configurations run first, 2 of its finished trials added for "
            "the sampler\n") in result.stdout
    shown = CliRunner().invoke(cli, ["study", "show", "child"])
    assert "Trials: 1 waiting (budget 4)" in shown.stdout
    assert "Warm start: 2 trials added from parent (not counted in the budget)" in shown.stdout
    again = CliRunner().invoke(cli, ["study", "create", str(path), "--warm-start", "parent", "--if-exists", "reuse"])
    assert again.exit_code == 0
    assert "Note: the study existed, so it was not warm-started from 'parent' again" in again.stdout
    assert len(load_study("child", target).study.get_trials(deepcopy=False)) == 3


def test_a_parent_with_other_objectives_or_none_at_all_is_refused_before_anything_is_created(tmp_path, target):
    _parent(tmp_path, target, {0.05: 0.9})
    path = write_spec(tmp_path, "child")
    runner = CliRunner()
    loss = runner.invoke(cli, ["study", "create", str(path), "--warm-start", "parent",
                               "--set", "objective={metric: val_loss}"])
    assert loss.exit_code == 2
    assert loss.stderr.endswith("Error: --warm-start parent: it optimises val_accuracy (maximize), this spec "
                                "val_loss (minimize); a warm start needs the same objectives\n")
    missing = runner.invoke(cli, ["study", "create", str(path), "--warm-start", "nope"])
    assert missing.exit_code == 2 and "Error: no study named 'nope'" in missing.stderr
    itself = runner.invoke(cli, ["study", "create", str(path), "--warm-start", "child"])
    assert itself.exit_code == 2 and "a study cannot warm-start from itself" in itself.stderr
    names = [s.study_name for s in optuna.get_all_study_summaries(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(target.url))))]
    assert names == ["parent"]


def test_a_key_the_parent_searched_must_match_what_the_new_spec_fixes(tmp_path, target):
    _parent(tmp_path, target, {0.05: 0.9, 0.001: 0.7})
    child = load_spec(write_spec(tmp_path, "child", search={"model.width": "{low: 8, high: 32}"}))
    _study, _created, report = create_warm_started(child, target, parent="parent", top=3)
    assert report is not None and report.added == 1  # lr 0.001 is the new spec's train.lr
    assert report.left_out == ["1 trial left out: train.lr is not searched here and fixed to 0.001 "
                               "(e.g. train.lr=0.05)"]
    assert report.queued == [{"model.width": 16}]  # the parent's width (its config has none: the fixed 16)


def test_top_without_warm_start_is_refused(tmp_path, target):
    result = CliRunner().invoke(cli, ["study", "create", str(write_spec(tmp_path, "child")), "--top", "2"])
    assert result.exit_code == 2
    assert result.stderr == "Error: --top applies to --warm-start OTHER: give the study to start from too\n"
    assert not (tmp_path / "hpo-studies.journal").exists()  # nothing created


def test_a_negative_top_is_refused(tmp_path, target):
    _parent(tmp_path, target, {0.05: 0.9})
    with pytest.raises(UsageError, match=r"--top must be 0 or more \(got -1\)"):
        create_warm_started(load_spec(write_spec(tmp_path, "child")), target, parent="parent", top=-1)


def test_best_of_a_study_with_enqueue_sets_gives_a_spec_that_validates(tmp_path, target):
    path = write_spec(tmp_path, "e")
    path.write_text(path.read_text() + "enqueue:\n  - {train.lr: 0.01}\n")
    study, _ = create_study(load_spec(path), target)
    trial = study.ask()
    trial.suggest_float("train.lr", 1e-4, 1e-1, log=True)
    config = {"data": {"name": "digits"}, "model": {"name": "mlp"}, "train": {"lr": 0.01, "epochs": 1}}
    trial.set_user_attr(CONFIG, config)
    study.tell(trial, 0.9)
    result = CliRunner().invoke(cli, ["study", "best", "e", "--format", "yaml"])
    assert result.exit_code == 0 and "enqueue" not in result.stdout
    (tmp_path / "best.yaml").write_text(result.stdout)
    assert load_spec(tmp_path / "best.yaml").search == {}


def test_a_parent_whose_fixed_config_differs_adds_nothing_and_names_the_keys(tmp_path, target):
    """A value both specs fix but to different values (another dataset, more epochs) makes a
    different experiment: its accuracies would mislead the sampler and become the best."""
    _parent(tmp_path, target, {0.05: 0.99, 0.002: 0.8})
    child = load_spec(write_spec(tmp_path, "child"), overrides=["data.name=fashion_mnist", "train.epochs=2"])
    study, created, report = create_warm_started(child, target, parent="parent", top=3)
    assert created and report is not None
    assert (report.added, report.queued) == (0, [])
    assert report.left_out == ["2 trials left out: the fixed config differs: data.name is 'digits' there, "
                               "'fashion_mnist' here; train.epochs is 1 there, 2 here"]
    assert study.get_trials(deepcopy=False) == []


def test_a_key_either_spec_searches_is_not_compared_as_fixed(tmp_path, target):
    """The parent fixes model.width to 16 while the child searches it: the trials still fit
    (and the child's fixed lr, which the parent searched, is checked per trial as before)."""
    _parent(tmp_path, target, {0.05: 0.9, 0.002: 0.8})
    child = load_spec(write_spec(tmp_path, "child", search={
        "train.lr": "{low: 1.0e-4, high: 1.0e-1, log: true}", "model.width": "{low: 8, high: 32}"}))
    _study, _created, report = create_warm_started(child, target, parent="parent", top=3)
    assert report is not None and report.added == 2 and report.left_out == []


def test_where_and_how_the_data_is_read_is_not_part_of_the_experiment(tmp_path, target):
    """A parent tuned on a laptop warm-starts a study on a cluster: another data root, more
    loader processes, decoding into memory or not choose the same examples, and another training
    seed repeats the same experiment, so trials fit."""
    _parent(tmp_path, target, {0.05: 0.9, 0.002: 0.8})
    child = load_spec(write_spec(tmp_path, "child"), overrides=[
        "data.root=/mnt/datasets", "data.num_workers=8", "data.in_memory=true", "data.download=true",
        "train.seed=7"])
    _study, _created, report = create_warm_started(child, target, parent="parent", top=3)
    assert report is not None and report.added == 2 and report.left_out == []


def test_added_trials_read_the_data_where_and_as_the_new_study_does(tmp_path, target):
    """An added trial keeps its config for retrain, confirm and load_model: those must read
    the new study's data (the cluster's root, its loaders), not the parent's laptop paths."""
    _parent(tmp_path, target, {0.05: 0.9, 0.002: 0.8}, data={
        "root": "/home/laptop/data", "download": False, "num_workers": 0, "in_memory": False, "split_seed": 0})
    child = load_spec(write_spec(tmp_path, "child"), overrides=[
        "data.root=/mnt/datasets", "data.num_workers=8", "data.in_memory=true", "data.download=true"])
    study, _created, report = create_warm_started(child, target, parent="parent", top=0)
    assert report is not None and report.added == 2
    for trial in study.get_trials(deepcopy=False):
        config = trial.user_attrs[CONFIG]
        assert config["data"] == {"name": "digits", "root": "/mnt/datasets", "download": True, "num_workers": 8,
                                  "in_memory": True, "split_seed": 0}  # the rest as the parent ran it
        assert config["train"] == {"lr": trial.params["train.lr"], "epochs": 1}
    parent = load_study("parent", target).study
    assert all(t.user_attrs[CONFIG]["data"]["root"] == "/home/laptop/data"
               for t in parent.get_trials(deepcopy=False) if CONFIG in t.user_attrs)  # the parent's own stay
