"""hpo study extend, reuse of a spec that differs only in its budget, and enqueue: at creation."""

from __future__ import annotations

import optuna
import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.errors import UsageError
from hpo.spec import load_spec
from hpo.storage.urls import resolve_storage
from hpo.study.attrs import BUDGET_EXTENSION
from hpo.study.studies import create_study, effective_budget, extend_study, load_study
from hpo.worker.budget import budget_state
from hpo.worker.loop import run_worker
from tests.specs import write_spec


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    return tmp_path


def _states(name: str, target) -> list[str]:
    trials = load_study(name, target).study.get_trials(deepcopy=False)
    return [t.state.name for t in sorted(trials, key=lambda t: t.number)]


@pytest.mark.slow
def test_extend_gives_a_spent_study_more_trials(here):
    target = resolve_storage(str(here / "s.journal"))
    spec = load_spec(write_spec(here, "grow", n_trials=2))
    create_study(spec, target)
    assert run_worker("grow", target).stop_reason == "budget spent: 2 of 2 trials finished"
    result = CliRunner().invoke(cli, ["study", "extend", "grow", "--n-trials", "4", "--storage", str(target.url)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Study 'grow' in {target.display}: n_trials 2 -> 4\n"
    shown = CliRunner().invoke(cli, ["study", "show", "grow", "--storage", str(target.url)])
    assert "Trials: 2 complete (budget 4, extended)" in shown.stdout
    assert run_worker("grow", target).stop_reason == "budget spent: 4 of 4 trials finished"
    assert _states("grow", target) == ["COMPLETE"] * 4
    loaded = load_study("grow", target)  # the stored spec still verifies, as created
    assert loaded.spec.budget.n_trials == 2


def test_a_running_worker_sees_the_extension_before_its_next_trial(here):
    target = resolve_storage(str(here / "s.journal"))
    spec = load_spec(write_spec(here, "run", n_trials=1))
    study, _ = create_study(spec, target)
    lr = optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)
    study.add_trial(optuna.trial.create_trial(value=0.5, params={"train.lr": 0.01}, distributions={"train.lr": lr}))
    assert budget_state(study, spec.budget).exhausted  # the worker's own study object
    extend_study("run", target, n_trials=3, timeout="1h")
    state = budget_state(study, spec.budget)
    assert not state.exhausted and state.stop_reason is None
    assert study.user_attrs[BUDGET_EXTENSION] == {"n_trials": 3, "timeout": 3600.0}


def test_extend_refuses_fewer_trials_than_counted(here):
    target = resolve_storage(str(here / "s.journal"))
    study, _ = create_study(load_spec(write_spec(here, "low", n_trials=5)), target)
    for value in (0.1, 0.2, 0.3):
        study.add_trial(optuna.trial.create_trial(value=value))
    with pytest.raises(UsageError) as caught:
        extend_study("low", target, n_trials=2)
    assert str(caught.value) == (f"study 'low' in {target.display} has already counted 3 trials (3 finished, "
                                 "0 running or waiting): n_trials can be lowered to 3 at the least (got 2)")
    assert BUDGET_EXTENSION not in study.user_attrs
    assert extend_study("low", target, n_trials=3).describe() == "n_trials 5 -> 3"  # down to the count is fine


def test_extend_needs_a_limit_and_a_duration(here):
    runner = CliRunner()
    write_spec(here, "x")
    assert runner.invoke(cli, ["study", "create", "x.yaml"]).exit_code == 0
    none = runner.invoke(cli, ["study", "extend", "x"])
    assert none.exit_code == 2
    assert none.stderr.endswith("Error: nothing to extend: give --n-trials N and/or --timeout T\n")
    bad = runner.invoke(cli, ["study", "extend", "x", "--timeout", "soon"])
    assert bad.exit_code == 2 and "Error: --timeout soon: expected a duration such as 90, '45s'" in bad.stderr
    missing = runner.invoke(cli, ["study", "extend", "nope", "--n-trials", "3"])
    assert missing.exit_code != 0 and "Error: no study named 'nope'" in missing.stderr


def test_reuse_applies_a_budget_only_difference_and_refuses_others(here):
    path = write_spec(here, "re", n_trials=2)
    runner = CliRunner()
    assert runner.invoke(cli, ["study", "create", str(path)]).exit_code == 0
    more = runner.invoke(cli, ["study", "create", str(path), "--if-exists", "reuse", "--set", "budget.n_trials=6",
                               "--set", "budget.timeout=2h"])
    assert more.exit_code == 0, more.output
    assert ("Note: the spec differs from the study's only in its budget: n_trials 2 -> 6, timeout none -> 7200 s"
            in more.stdout)
    same = runner.invoke(cli, ["study", "create", str(path), "--if-exists", "reuse", "--set", "budget.n_trials=6",
                               "--set", "budget.timeout=2h"])
    assert same.exit_code == 0 and "Note:" not in same.stdout
    other = runner.invoke(cli, ["study", "create", str(path), "--if-exists", "reuse", "--set", "train.epochs=2"])
    assert other.exit_code == 2 and "with a different spec" in other.stderr and "only budget.n_trials" in other.stderr
    target = resolve_storage(None)
    assert load_study("re", target).study.user_attrs[BUDGET_EXTENSION] == {"n_trials": 6, "timeout": 7200.0}


@pytest.mark.slow
def test_enqueued_sets_run_first_and_once(here):
    path = write_spec(here, "q", n_trials=3)
    path.write_text(path.read_text() + "enqueue:\n  - {train.lr: 0.05}\n  - {train.lr: 0.002}\n  - {train.lr: 0.05}\n")
    runner = CliRunner()
    made = runner.invoke(cli, ["study", "create", str(path)])
    assert made.exit_code == 0 and "Queued the spec's 3 enqueue: sets to run first" in made.stdout
    target = resolve_storage(None)
    assert _states("q", target) == ["WAITING", "WAITING"]  # the repeated set is queued once
    assert runner.invoke(cli, ["study", "create", str(path), "--if-exists", "reuse"]).exit_code == 0
    assert _states("q", target) == ["WAITING", "WAITING"]  # not again on reuse
    run_worker("q", target)
    trials = sorted(load_study("q", target).study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert [t.params["train.lr"] for t in trials[:2]] == [0.05, 0.002]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3


def test_list_shows_the_budget_in_force(here):
    target = resolve_storage(None)
    create_study(load_spec(write_spec(here, "l", n_trials=2)), target)
    extend_study("l", target, n_trials=9)
    result = CliRunner().invoke(cli, ["study", "list", "--format", "json"])
    assert '"budget_trials": 9' in result.stdout


def test_a_corrupt_extension_is_an_error_not_a_crash(here):
    target = resolve_storage(None)
    study, _ = create_study(load_spec(write_spec(here, "bad", n_trials=2)), target)
    study.set_user_attr(BUDGET_EXTENSION, {"n_trials": "lots", "timeout": None})
    with pytest.raises(UsageError, match=r"budget extension \(hpo:budget_extension\) is invalid: n_trials: "):
        budget_state(study, load_study("bad", target).spec.budget)


@pytest.mark.parametrize(("limits", "said", "expected"), [
    (["--n-trials", "5"], "n_trials 2 -> 5", (5, None)),
    (["--timeout", "1h"], "timeout none -> 3600 s", (2, 3600.0)),  # n_trials: the spec's, not "lots"
])
def test_extend_replaces_a_corrupt_extension(here, limits, said, expected):
    """What the corrupt-extension error tells a user to run works: the spec's budget stands in
    for the unreadable extension, and the new one overwrites it."""
    target = resolve_storage(None)
    study, _ = create_study(load_spec(write_spec(here, "bad", n_trials=2)), target)
    study.set_user_attr(BUDGET_EXTENSION, {"n_trials": "lots", "timeout": None})
    result = CliRunner().invoke(cli, ["study", "extend", "bad", *limits])
    assert result.exit_code == 0, result.output
    assert said in result.stdout
    budget = effective_budget(study, load_study("bad", target).spec.budget)  # readable again
    assert (budget.n_trials, budget.timeout) == expected


@pytest.mark.postgres
def test_a_worker_on_postgresql_sees_an_extension_made_by_another_process(here, postgres_url):
    target = resolve_storage(postgres_url)
    spec = load_spec(write_spec(here, "pg", n_trials=1))
    create_study(spec, target)
    worker_study = load_study("pg", target, reconnect_for=5).study  # as a worker opens it
    lr = optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)
    worker_study.add_trial(optuna.trial.create_trial(value=0.5, params={"train.lr": 0.01},
                                                     distributions={"train.lr": lr}))
    assert budget_state(worker_study, spec.budget).exhausted
    extend_study("pg", resolve_storage(postgres_url), n_trials=2)  # its own connection, as the CLI
    assert not budget_state(worker_study, spec.budget).exhausted
    shown = CliRunner().invoke(cli, ["study", "show", "pg", "--storage", postgres_url])
    assert "(budget 2, extended)" in shown.stdout
    assert postgres_url.split("@")[0].split(":")[-1] not in shown.output  # the password never shows
