"""The worker loop on the embedded storage, in-process: budget, pruning, failures, records."""

from __future__ import annotations

import json
import math
import re

import optuna
import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.storage.urls import resolve_storage
from hpo.study.studies import load_study
from tests.specs import trials_of, worker_lines

TINY = """\
name: {name}
budget: {budget}
sampler: {sampler}
pruner: {pruner}
model: {{name: mlp, n_layers: 1, width: 16}}
train: {train}
search: {search}
"""


@pytest.fixture
def study(tmp_path, monkeypatch):
    """Create a study from a tiny spec; returns a function running CLI commands on it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)

    def make(name="tiny", budget="{n_trials: 4}", sampler="{name: random, seed: 0}",
             pruner="{name: none}", train="{epochs: 2, batch_size: 128}", search="{}"):
        path = tmp_path / f"{name}.yaml"
        text = TINY.format(name=name, budget=budget, sampler=sampler, pruner=pruner, train=train, search=search)
        path.write_text(text.replace("pruner: None\n", ""))  # None: a spec naming no pruner
        created = CliRunner().invoke(cli, ["study", "create", str(path)])
        assert created.exit_code == 0, created.output
        return lambda *args: CliRunner().invoke(cli, list(args))

    return make


def test_worker_runs_the_global_budget_and_records_every_trial(study):
    run = study(search="{train.lr: {low: 1e-3, high: 1e-1, log: true}}")
    result = run("worker", "tiny")
    assert result.exit_code == 0, result.output
    device_line, *lines = worker_lines(result.stdout)
    assert re.fullmatch(r"Device: cpu \(\d+ threads?\)", device_line)  # auto, on this machine
    assert [line.split(" ")[:3] for line in lines[:4]] == [["trial", str(i), "complete"] for i in range(4)]
    assert lines[-1] == ("Worker done: 4 trials (4 complete, 0 pruned, 0 failed); "
                         "budget spent: 4 of 4 trials finished")
    trials = trials_of("tiny")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    for t in trials:
        attrs = t.user_attrs
        assert set(t.params) == {"train.lr"}
        assert attrs["config"]["train"]["lr"] == t.params["train.lr"]
        assert attrs["params_total"] == attrs["params_trainable"] == 64 * 16 + 16 + 16 * 10 + 10
        assert len(attrs["curves"]["val_accuracy"]) == len(attrs["curves"]["train_loss"]) == 2
        assert t.value == max(attrs["curves"]["val_accuracy"])
        assert t.intermediate_values == dict(enumerate(attrs["curves"]["val_accuracy"], 1))
        assert attrs["seconds_per_epoch"] > 0 and attrs["device"] == "cpu" and attrs["seed"] == 0
        assert set(attrs["versions"]) == {"hpo", "optuna", "torch", "python"}
        assert attrs["images_per_second"] > 0 and attrs["peak_memory_mb"] > 0
        assert 0 < attrs["startup_seconds"] < attrs["seconds_per_epoch"] * 2 + 60
        assert attrs["precision"] == "fp32"
        assert attrs["curves"]["lr"] == [t.params["train.lr"]] * 2  # no schedule: constant
        counts = attrs["data"]["class_counts"]
        assert len(counts["train"]) == len(counts["val"]) == 10
        assert sum(counts["train"]) + sum(counts["val"]) == 1797 - math.ceil(0.2 * 1797)  # test held out
        assert attrs["data"]["skipped_images"] == 0
    # A second worker finds the budget spent and exits 0 at once.
    again = run("worker", "tiny")
    assert again.exit_code == 0
    assert again.stdout.splitlines()[-1] == ("Worker done: 0 trials (0 complete, 0 pruned, 0 failed); "
                                             "budget spent: 4 of 4 trials finished")


def test_worker_limits_are_per_worker(study):
    run = study(budget="{n_trials: 10}")
    result = run("worker", "tiny", "--n-trials", "2")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1].endswith("; --n-trials 2 reached")
    assert len(trials_of("tiny")) == 2


def test_pruned_trials_record_the_epoch_and_show_counts_saved_epochs(study):
    # A learning rate that cannot learn in the first epochs next to one that can: the
    # median pruner (after one complete trial) stops the bad ones at epoch 1.
    run = study(
        budget="{n_trials: 6}", train="{epochs: 4, batch_size: 64, optimizer: sgd, momentum: 0.0}",
        pruner="{name: median, n_startup_trials: 1, n_warmup_steps: 0}",
        search="{train.lr: {choices: [0.5, 1e-7]}}",
    )
    result = run("worker", "tiny", "--rank", "0")  # a fixed rank: seed 0 draws both choices
    assert result.exit_code == 0, result.output
    pruned = [t for t in trials_of("tiny") if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "some trials with lr=1e-7 should have been pruned"
    for t in pruned:
        assert t.params["train.lr"] == 1e-7
        assert t.user_attrs["pruned_at_epoch"] == len(t.intermediate_values) < 4
    assert f"trial {pruned[0].number} pruned at epoch {pruned[0].user_attrs['pruned_at_epoch']}:" in result.stdout
    show = json.loads(run("study", "show", "tiny", "--format", "json").stdout)
    assert show["states"]["pruned"] == len(pruned)
    assert show["states"]["complete"] + show["states"]["pruned"] == 6
    saved = sum(4 - t.user_attrs["pruned_at_epoch"] for t in pruned)
    assert show["epochs"]["saved"] == saved > 0
    assert show["epochs"]["without_pruning"] == 24
    assert {p["number"] for p in show["pruned"]} == {t.number for t in pruned}
    table = run("study", "show", "tiny")
    assert f"({saved} saved)" in table.stdout


def test_the_default_pruner_stops_weak_trials_at_its_first_rung(study):
    # No pruner named: successive halving, first rung at epoch 2 (the only one of 3 epochs).
    # Behind a trial that learns, one with lr=1e-7 is in the worse half at epoch 2 and stopped
    # there (ties count as kept); the rung values of the others reach its pruner through
    # hpo's view of the study (PrunerView).
    run = study(
        budget="{n_trials: 6}", train="{epochs: 3, batch_size: 64, optimizer: sgd, momentum: 0.0}",
        pruner=None, search="{train.lr: {choices: [0.5, 1e-7]}}",
    )
    assert load_study("tiny", resolve_storage(None)).spec.pruner.name == "successive_halving"
    result = run("worker", "tiny", "--rank", "0")
    assert result.exit_code == 0, result.output
    trials = trials_of("tiny")
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "some trials with lr=1e-7 should have been pruned"
    for t in pruned:
        assert t.params["train.lr"] == 1e-7
        assert t.user_attrs["pruned_at_epoch"] == len(t.intermediate_values) == 2
        assert t.system_attrs["completed_rung_0"] == t.intermediate_values[2]  # written to the storage
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials if t.params["train.lr"] == 0.5)


def test_a_trial_that_trained_all_its_epochs_is_never_pruned(study):
    # 2 epochs: the default pruner's first rung is the last epoch. Stopping a trial there saves
    # nothing and throws its training away: it completes (and counts) however it compares.
    run = study(
        budget="{n_trials: 6}", train="{epochs: 2, batch_size: 64, optimizer: sgd, momentum: 0.0}",
        pruner=None, search="{train.lr: {choices: [0.5, 1e-7]}}",
    )
    result = run("worker", "tiny", "--rank", "0")
    assert result.exit_code == 0, result.output
    trials = trials_of("tiny")
    assert {t.params["train.lr"] for t in trials} == {0.5, 1e-7}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_failures_are_recorded_and_max_failed_trials_stops_the_worker(study):
    # Nesterov momentum without momentum is rejected by the optimiser: every trial fails.
    run = study(budget="{n_trials: 10, max_failed_trials: 2}",
                train="{epochs: 1, optimizer: sgd, nesterov: true, momentum: 0.0}")
    result = run("worker", "tiny")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: 2 trials failed, reaching budget.max_failed_trials = 2; see 'hpo study show' for the reasons")
    trials = trials_of("tiny")
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
    reason = trials[0].user_attrs["fail_reason"]
    assert "nesterov" in reason and "momentum" in reason
    show = json.loads(run("study", "show", "tiny", "--format", "json").stdout)
    assert show["failures"] == [{"reason": reason, "count": 2}]
    assert f"Failed (2): {reason}" in run("study", "show", "tiny").stdout


def test_budget_timeout_is_global(study):
    run = study(budget="{n_trials: 1000, timeout: 1}")
    result = run("worker", "tiny")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1].endswith("budget.timeout of 1 s reached")
    done = len(trials_of("tiny"))
    assert done >= 1
    later = run("worker", "tiny")  # the clock started with the first worker
    assert later.stdout.splitlines()[-1] == ("Worker done: 0 trials (0 complete, 0 pruned, 0 failed); "
                                             "budget.timeout of 1 s reached")


def test_show_best_and_list_report_the_study(study, tmp_path):
    run = study(search="{model.width: {choices: [8, 32]}}")
    assert run("worker", "tiny").exit_code == 0
    trials = trials_of("tiny")
    best_value = max(t.value for t in trials)
    best = json.loads(run("study", "best", "tiny", "--format", "json").stdout)
    assert best["value"] == best_value
    assert best["params"] == trials[best["number"]].params
    assert best["config"] == trials[best["number"]].user_attrs["config"]
    listed = json.loads(run("study", "list", "--format", "json").stdout)
    assert [(r["name"], r["trials"], r["complete"], r["best_value"]) for r in listed] == [("tiny", 4, 4, best_value)]
    # The YAML form is a spec that re-runs the best configuration.
    rerun = tmp_path / "best.yaml"
    rerun.write_text(run("study", "best", "tiny", "--format", "yaml").stdout)
    created = run("study", "create", str(rerun))
    assert created.exit_code == 0, created.output
    name = f"tiny-trial-{best['number']}"
    assert run("worker", name).exit_code == 0
    (again,) = trials_of(name)
    assert again.user_attrs["config"] == best["config"]
    assert again.value == pytest.approx(best_value)


def test_grid_sampler_runs_every_combination_once(study):
    run = study(budget="{n_trials: 4}", sampler="{name: grid, seed: 0}",
                search="{train.batch_size: {choices: [32, 64]}, train.lr: {choices: [0.01, 0.001]}}")
    assert run("worker", "tiny").exit_code == 0
    combos = sorted((t.params["train.batch_size"], t.params["train.lr"]) for t in trials_of("tiny"))
    assert combos == [(32, 0.001), (32, 0.01), (64, 0.001), (64, 0.01)]


def test_multi_objective_records_every_metric_prunes_on_the_first_and_reports_the_pareto_front(study, tmp_path):
    run = study(
        budget="{n_trials: 8}", pruner="{name: median, n_startup_trials: 1, n_warmup_steps: 0}",
        train="{epochs: 3, batch_size: 64, optimizer: sgd, momentum: 0.0}",
        search="{train.lr: {choices: [0.5, 1e-7]}, model.width: {choices: [8, 32]}}",
    )
    path = tmp_path / "multi.yaml"
    text = (tmp_path / "tiny.yaml").read_text().replace("name: tiny", "name: multi")
    path.write_text(text + "objective: [{metric: val_accuracy}, {metric: params}]\n")
    assert run("study", "create", str(path)).exit_code == 0
    result = run("worker", "multi", "--rank", "0")
    assert result.exit_code == 0, result.output
    trials = trials_of("multi")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(complete) + len(pruned) == 8 and complete and pruned
    for t in complete:
        accuracy, params = t.values
        assert params == t.user_attrs["params_total"]
        assert accuracy == max(t.user_attrs["curves"]["val_accuracy"])
    for t in pruned:  # pruned on the first objective, whose per-epoch values are stored
        assert t.params["train.lr"] == 1e-7
        assert t.intermediate_values == dict(enumerate(t.user_attrs["curves"]["val_accuracy"], 1))
    best = json.loads(run("study", "best", "multi", "--format", "json").stdout)
    study = load_study("multi", resolve_storage(None)).study
    assert sorted(b["number"] for b in best) == sorted(t.number for t in study.best_trials)
    assert all(b["metrics"] == ["val_accuracy", "params"] and len(b["values"]) == 2 for b in best)
    table = run("study", "best", "multi").stdout
    assert table.splitlines()[0] == f"Pareto front of multi (val_accuracy, params): {len(best)} trials"
    exported = tmp_path / "multi.csv"
    assert run("study", "export", "multi", "--output", str(exported)).exit_code == 0
    import pandas as pd

    frame = pd.read_csv(exported)
    assert {"value_0", "value_1"} <= set(frame.columns)
    report = run("study", "report", "multi", "--output", str(tmp_path / "report"))
    assert report.exit_code == 0, report.output
    assert "Pareto" in (tmp_path / "report" / "report.md").read_text()


def test_equal_values_are_ranked_as_optuna_ranks_them():
    """One validation image is 0.28 points of accuracy on digits: ties are common. Of equal
    values the first is best, as Optuna and its dashboard say (tests/results/test_one_best.py)."""
    from hpo.results.summary import ranked_trials

    study = optuna.create_study(direction="maximize")
    for loss_at_best, value in [(0.09, 0.98), (0.05, 0.98), (0.30, 0.97)]:
        trial = study.ask()
        trial.set_user_attr("curves", {"val_accuracy": [0.5, value], "val_loss": [1.0, loss_at_best]})
        study.tell(trial, value)
    assert study.best_trial.number == 0  # Optuna keeps the first of equals
    assert [t.number for t in ranked_trials(study, study.trials)] == [0, 1, 2]


def test_a_diverged_trial_is_pruned_with_the_worst_value_so_the_sampler_avoids_it(study):
    # lr 1e4 with plain SGD makes the loss infinite within the first epoch.
    run = study(budget="{n_trials: 3}", train="{epochs: 3, optimizer: sgd, momentum: 0.0}",
                search="{train.lr: {choices: [10000.0]}}")
    result = run("worker", "tiny")
    assert result.exit_code == 0, result.output
    trials = trials_of("tiny")
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 3
    for t in trials:
        assert t.user_attrs["fail_reason"].startswith("loss became ")
        epochs = t.user_attrs["epochs_trained"]
        reached = dict(enumerate(t.user_attrs.get("curves", {}).get("val_accuracy", []), 1))
        # What it reached, then the worst val_accuracy one step after its last epoch.
        assert t.intermediate_values == {**reached, epochs + 1: float("-inf")}
        assert t.user_attrs["pruned_at_epoch"] == epochs < 3
    assert " epochs: loss became " in result.stdout
    assert result.stdout.splitlines()[-1].startswith("Worker done: 3 trials (0 complete, 3 pruned, 0 failed)")
    show = json.loads(run("study", "show", "tiny", "--format", "json").stdout)
    assert show["failures"][0]["count"] == 3 and show["failures"][0]["reason"].startswith("loss became ")
    assert all(p["reason"].startswith("loss became ") for p in show["pruned"])


def test_out_of_memory_is_recorded_with_the_batch_size(study, monkeypatch):
    import torch

    import hpo.training

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(hpo.training, "train_model", out_of_memory)
    run = study(budget="{n_trials: 2}", search="{train.batch_size: {choices: [512]}}")
    result = run("worker", "tiny")
    assert result.exit_code == 0, result.output
    for t in trials_of("tiny"):
        assert t.state == optuna.trial.TrialState.PRUNED
        assert t.user_attrs["fail_reason"] == "out of memory at batch_size=512"
        assert t.intermediate_values == {1: float("-inf")}


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_trial_whose_worker_was_killed_is_failed_and_retried_with_the_same_params(study, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = study(budget="{n_trials: 2, max_retries: 1}", train="{epochs: 25, batch_size: 8}",
                search="{train.lr: {low: 1e-3, high: 1e-1, log: true}}")
    env = {**os.environ, "HPO_THREADS": "1"}
    victim = subprocess.Popen([sys.executable, "-m", "hpo", "worker", "tiny", "--quiet", "--rank", "0"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it is training trial 0
            trials = trials_of("tiny")
            if trials and trials[0].user_attrs.get("config"):
                break
            time.sleep(0.05)  # the trial takes about 2 s: kill it well before its end
        else:
            raise AssertionError("the worker never started a trial")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    (orphan,) = trials_of("tiny")
    assert orphan.state == optuna.trial.TrialState.RUNNING
    assert orphan.user_attrs["worker"]["pid"] == victim.pid
    import socket

    from hpo.worker.recovery import sweep_dead_trials

    study_ = load_study("tiny", resolve_storage(None)).study
    assert sweep_dead_trials(study_, max_retries=1) == [0]
    assert sweep_dead_trials(study_, max_retries=1) == []  # swept once only
    trials = trials_of("tiny")
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == f"worker process {victim.pid} on {socket.gethostname()} died"
    retry = trials[1]
    assert retry.state == optuna.trial.TrialState.WAITING
    assert retry.system_attrs["fixed_params"] == orphan.params
    # It resumes from the orphan's last checkpoint, if the orphan finished an epoch.
    resume = {"resume_from": orphan.user_attrs["checkpoint"]} if "checkpoint" in orphan.user_attrs else {}
    assert retry.user_attrs == {"retry_of": 0, "retries": 1, **resume}
    # Any worker then runs the retry with the same parameters, and the budget ends exact.
    result = run("worker", "tiny", "--rank", "1")
    assert result.exit_code == 0, result.output
    trials = trials_of("tiny")
    finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 2
    assert finished[0].number == 1 and finished[0].params == orphan.params
    assert finished[0].user_attrs["retry_of"] == 0
