"""Failures that would repeat forever: a fixed dataset that cannot load, trials that fail for
the same reason again and again, and the default failure budget (failed trials do not count
towards ``n_trials``, so without one a study whose every trial fails never ends)."""

from __future__ import annotations

import json
import time

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo.cli.main import cli
from hpo.spec import load_spec, spec_from_json, spec_sha256, spec_to_json
from hpo.spec.model import Budget
from hpo.storage.urls import resolve_storage
from hpo.study.attrs import FAIL_REASON, OVER_BUDGET, RETRIED
from hpo.worker.budget import failure_stop, failure_streak
from tests.badinput import assert_refused, snapshot, within_bounds
from tests.specs import trials_of

SPEC = """\
name: {name}
budget: {budget}
sampler: {{name: random, seed: 0}}
pruner: {{name: none}}
data: {data}
model: {{name: mlp, n_layers: 1, width: 16}}
train: {train}
search: {search}
"""
# Nesterov momentum without momentum is refused by the optimiser: every trial fails alike.
FAILS_ALIKE = "{epochs: 1, optimizer: sgd, nesterov: true, momentum: 0.0}"


@pytest.fixture
def study(tmp_path, monkeypatch):
    """Create a study from a small spec in tmp_path; returns a CLI runner for commands on it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPO_STORAGE", str(tmp_path / "studies.journal"))  # no "Using the embedded..."

    def make(name="fails", budget="{n_trials: 50}", data="{name: digits}",
             train="{epochs: 1, batch_size: 128}", search="{}"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(SPEC.format(name=name, budget=budget, data=data, train=train, search=search))
        created = CliRunner().invoke(cli, ["study", "create", str(path)])
        assert created.exit_code == 0, created.output
        return lambda *args: CliRunner().invoke(cli, list(args))

    return make


def missing_fashion_mnist(tmp_path):
    """A data section naming a torchvision dataset in an empty directory (no download)."""
    root = tmp_path / "no-data"
    root.mkdir()
    return f"{{name: fashion_mnist, root: {root}}}", root


def fashion_mnist_not_found(root):
    """The reason a trial records when FashionMNIST is not in ``root``."""
    from hpo.errors import TrainingError
    from hpo.training.config import DataConfig
    from hpo.training.data import load_splits

    with pytest.raises(TrainingError) as caught:
        load_splits(DataConfig(name="fashion_mnist", root=str(root)))
    return str(caught.value)


# --------------------------------------------------------------------------- a fixed dataset


@pytest.mark.parametrize("search", [
    "{}",
    # Searched, but not what chooses the files: every trial would read the same missing ones
    # (the grid example, fashion_mnist_patch_mlp.yaml, searches data.augment).
    "{data.augment: {choices: [none, light]}}",
    "{data.val_fraction: {low: 0.1, high: 0.3}}",
])
def test_a_fixed_dataset_that_cannot_load_fails_the_worker_before_any_trial(study, tmp_path, search):
    data, root = missing_fashion_mnist(tmp_path)
    run = study(data=data, search=search)
    reason = fashion_mnist_not_found(root)  # imports torch: outside the bound
    before = snapshot(tmp_path)
    started = time.monotonic()
    with within_bounds(seconds=30):
        result = run("worker", "fails")
    seconds = time.monotonic() - started
    assert reason.startswith("FashionMNIST not found: ")
    assert_refused(result, says=reason, exit_code=2)
    assert result.stderr == f"Error: {reason}\n"  # exactly what the trial would have recorded
    assert trials_of("fails") == []
    assert snapshot(tmp_path) == before  # no trial, no attribute, no artifact
    assert seconds < 10


def test_a_passing_fault_while_loading_is_left_to_the_trials(study, tmp_path, monkeypatch):
    # A download cut short, the device or memory: not the spec's fault and maybe passing, so
    # no exit 2 (final for a pool); the trial meets it, records it, and the next one trains.
    import hpo.training.data as data_module

    real_load_splits = data_module.load_splits
    calls = []

    def flaky_load_splits(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("connection reset by peer")
        return real_load_splits(*args, **kwargs)

    monkeypatch.setattr(data_module, "load_splits", flaky_load_splits)
    run = study(budget="{n_trials: 1}")
    result = run("worker", "fails")
    assert result.exit_code == 0, result.output
    assert [t.state for t in trials_of("fails")] == [TrialState.COMPLETE]
    assert calls  # the worker's own check met the fault


def test_a_searched_dataset_that_fails_for_some_values_is_left_to_the_trials(study, tmp_path):
    # Which dataset is searched: the worker cannot judge the values in advance. Those that
    # load train; the others fail their trials, with the reason, and the study goes on.
    _, root = missing_fashion_mnist(tmp_path)
    run = study(budget="{n_trials: 4, max_failed_trials: 20}", data=f"{{root: {root}}}",
                search="{data.name: {choices: [digits, fashion_mnist]}}")
    result = run("worker", "fails", "--rank", "0", "--n-trials", "12")  # the rank fixes the draws
    assert result.exit_code == 0, result.output
    trials = trials_of("fails")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all(t.params["data.name"] == "fashion_mnist" for t in failed)
    assert {t.user_attrs[FAIL_REASON] for t in failed} == {fashion_mnist_not_found(root)}


def test_a_searched_dataset_that_never_loads_is_stopped_by_the_default_failure_budget(study, tmp_path):
    # Two missing datasets fail with two reasons, so no run of one reason stops them (the
    # streak is set out of reach here): the default max_failed_trials, n_trials, does.
    _, root = missing_fashion_mnist(tmp_path)
    run = study(budget="{n_trials: 6, max_consecutive_failures: 50}", data=f"{{root: {root}}}",
                search="{data.name: {choices: [mnist, fashion_mnist]}}")
    result = run("worker", "fails", "--rank", "0", "--n-trials", "20")  # the bound before this was fixed
    assert result.exit_code == 1, result.output
    assert result.stderr == ("Error: 6 trials failed, reaching budget.max_failed_trials = 6 "
                             "(by default budget.n_trials); see 'hpo study show' for the reasons\n")
    trials = trials_of("fails")
    assert [t.state for t in trials] == [TrialState.FAIL] * 6
    assert {t.params["data.name"] for t in trials} == {"mnist", "fashion_mnist"}


# --------------------------------------------------------------------------- the same failure


def test_trials_failing_alike_n_times_in_a_row_stop_the_study_and_show_says_why(study):
    run = study(train=FAILS_ALIKE)
    result = run("worker", "fails", "--n-trials", "12")  # the bound before this was fixed
    assert result.exit_code == 1, result.output
    trials = trials_of("fails")
    assert [t.state for t in trials] == [TrialState.FAIL] * 5
    reason = trials[0].user_attrs[FAIL_REASON]
    stop = ("5 trials in a row failed with the same reason, reaching "
            f"budget.max_consecutive_failures = 5: {reason}")
    assert result.stderr == f"Error: {stop}\n"
    assert result.stdout.splitlines()[-1] == f"Worker done: 5 trials (0 complete, 0 pruned, 5 failed); {stop}"
    shown = json.loads(run("study", "show", "fails", "--format", "json").stdout)
    assert shown["stopped"] == stop
    assert shown["budget"]["max_consecutive_failures"] == 5
    assert f"Stopped: {stop}" in run("study", "show", "fails").stdout.splitlines()
    # A worker started later finds the study stopped and starts nothing.
    again = run("worker", "fails")
    assert again.exit_code == 1 and again.stderr == f"Error: {stop}\n"
    assert len(trials_of("fails")) == 5


def test_the_streak_is_the_studys_not_one_workers(study):
    run = study(train=FAILS_ALIKE, budget="{n_trials: 50, max_consecutive_failures: 4}")
    first = run("worker", "fails", "--n-trials", "3")
    assert first.exit_code == 0, first.output
    second = run("worker", "fails", "--n-trials", "3")
    assert second.exit_code == 1, second.output
    assert "4 trials in a row failed with the same reason" in second.stderr
    assert len(trials_of("fails")) == 4  # three from the first worker, one from the second


def test_show_says_nothing_stopped_a_healthy_study(study):
    run = study(budget="{n_trials: 2}")
    assert run("worker", "fails").exit_code == 0
    shown = json.loads(run("study", "show", "fails", "--format", "json").stdout)
    assert shown["stopped"] is None
    assert not any(line.startswith("Stopped:") for line in run("study", "show", "fails").stdout.splitlines())


def frozen(number, state, reason=None, **attrs):
    """A finished (or running) trial as the storage returns it."""
    user_attrs = dict(attrs)
    if reason is not None:
        user_attrs[FAIL_REASON] = reason
    values = {"value": 0.5} if state == TrialState.COMPLETE else {}
    trial = create_trial(state=state, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                         user_attrs=user_attrs, **values)
    trial.number = number
    return trial


def test_the_streak_follows_trial_numbers_and_skips_what_says_nothing_about_the_spec():
    trials = [
        frozen(0, TrialState.COMPLETE),
        frozen(1, TrialState.FAIL, "boom"),
        frozen(5, TrialState.FAIL, "boom"),  # listed out of order: numbers decide
        frozen(2, TrialState.RUNNING),  # not finished: neither breaks nor extends the run
        frozen(3, TrialState.FAIL, "stopped by SIGTERM", **{RETRIED: True}),  # handed back
        frozen(4, TrialState.FAIL, "not run", **{OVER_BUDGET: True}),
        frozen(6, TrialState.FAIL, "boom"),
    ]
    streak = failure_streak(trials)
    assert streak is not None and (streak.reason, streak.count, streak.first, streak.last) == ("boom", 3, 1, 6)
    assert failure_streak([*trials, frozen(7, TrialState.FAIL, "other")]).count == 1
    assert failure_streak([*trials, frozen(7, TrialState.PRUNED)]) is None
    assert failure_stop(trials, Budget(max_consecutive_failures=4)) is None
    assert failure_stop(trials, Budget(max_consecutive_failures=3)) == (
        "3 trials in a row failed with the same reason, reaching budget.max_consecutive_failures = 3: boom")


# --------------------------------------------------------------------------- the default budget


def test_failures_are_bounded_by_default_by_n_trials():
    assert Budget(n_trials=30).failed_trials_allowed == 30
    assert Budget(n_trials=30, max_failed_trials=3).failed_trials_allowed == 3
    assert Budget(n_trials=None).failed_trials_allowed == 100
    varied = [frozen(n, TrialState.FAIL, f"reason {n}") for n in range(4)]
    assert failure_stop(varied[:3], Budget(n_trials=4)) is None
    assert failure_stop(varied, Budget(n_trials=4)) == (
        "4 trials failed, reaching budget.max_failed_trials = 4 (by default budget.n_trials); "
        "see 'hpo study show' for the reasons")


def test_a_spec_without_the_new_keys_is_stored_and_hashed_as_before(tmp_path):
    # Studies created before max_consecutive_failures existed hold specs without it, and
    # `study create --if-exists reuse` compares hashes: an unchanged spec must still match.
    spec = load_spec("search_spaces/fashion_mnist_mlp.yaml")
    stored = spec_to_json(spec)
    assert "max_consecutive_failures" not in stored["budget"]
    assert stored["budget"]["max_failed_trials"] is None  # the default is resolved when used
    assert spec_from_json(stored).budget.max_consecutive_failures == 5
    changed = spec.model_copy(update={"budget": Budget(max_consecutive_failures=3)})
    assert spec_to_json(changed)["budget"]["max_consecutive_failures"] == 3
    assert spec_sha256(spec_to_json(changed)) != spec_sha256(stored)


def test_max_consecutive_failures_is_checked(tmp_path):
    from hpo.errors import SpecError

    path = tmp_path / "bad.yaml"
    path.write_text(SPEC.format(name="bad", budget="{max_consecutive_failures: 0}", data="{}",
                                train="{}", search="{}"))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value) == (f"{path}:2: budget.max_consecutive_failures: out of range "
                                 "(got 0; expected a value >= 1)")



def test_workers_running_at_once_stop_together_on_the_studys_run_of_failures(tmp_path, postgres_url):
    """Two workers on PostgreSQL, in threads: the run counts both workers' trials, in number
    order, and each stops at most one trial (its own, already running) after the fifth."""
    import threading

    from hpo.study.studies import create_study
    from hpo.worker.loop import run_worker

    path = tmp_path / "shared.yaml"
    path.write_text(SPEC.format(name="shared", budget="{n_trials: 50}", data="{name: digits}",
                                train="{epochs: 1}", search="{train.lr: {low: 1.0e-3, high: 1.0e-1}}"))
    target = resolve_storage(postgres_url)
    create_study(load_spec(path), target, artifacts=str(tmp_path / "artifacts"))

    def failing(*args, **kwargs):
        time.sleep(0.2)  # long enough for the two workers' trials to interleave
        raise RuntimeError("a bug in a custom model")

    reports = {}

    def work(rank):
        reports[rank] = run_worker("shared", target, rank=rank, trainer=failing, n_trials=20,
                                   reconnect_timeout=10)

    threads = [threading.Thread(target=work, args=(rank,)) for rank in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stop = ("trials in a row failed with the same reason, reaching budget.max_consecutive_failures "
            "= 5: RuntimeError: a bug in a custom model")
    assert {r.exit_code for r in reports.values()} == {1}
    assert all(r.stop_reason.endswith(stop) for r in reports.values())
    assert all(r.outcomes for r in reports.values())  # both ran trials
    trials = optuna.load_study(study_name="shared", storage=postgres_url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL] * len(trials)
    assert 5 <= len(trials) <= 6
