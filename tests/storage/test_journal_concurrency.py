"""The embedded default storage (Optuna's journal file) under many local writers.

Eight ``hpo worker`` processes start at once on one journal file: none may hit a lock
error, and together they must finish exactly the study's global budget, with no trial
lost, duplicated or left running. ``--processes`` (the local supervisor) must do the same.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.storage.urls import open_storage, resolve_storage
from hpo.study.attrs import OVER_BUDGET as OVER_BUDGET_ATTR
from hpo.study.attrs import SPEC as SPEC_ATTR
from tests.specs import describe, hpo_env, run_hpo, start_hpo, wait_all, write_spec

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

N_WORKERS = 8
N_TRIALS = 32
STUDY = "journal-8"
RECORDED_ATTRS = ("config", "params_total", "seconds_per_epoch", "curves", "seed", "device", "versions")
CURVES = ("train_loss", "val_loss", "val_accuracy")


def load(journal: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage(str(journal))))


@pytest.fixture(scope="module")
def eight_workers(tmp_path_factory: pytest.TempPathFactory):
    """One study on a journal file, run by 8 worker processes started together."""
    root = tmp_path_factory.mktemp("journal8")
    journal = root / "studies.journal"
    spec = write_spec(root, STUDY, n_trials=N_TRIALS, epochs=2, pruner="none")
    created = run_hpo("study", "create", str(spec), "--storage", str(journal), cwd=root)
    assert created.returncode == 0, describe([created])
    assert journal.is_file()

    env = hpo_env(storage=str(journal))
    workers = [start_hpo("worker", STUDY, "--quiet", env=env, cwd=root) for _ in range(N_WORKERS)]
    results = wait_all(workers)
    return journal, results, load(journal, STUDY)


def test_every_worker_exits_0_without_lock_errors(eight_workers):
    _, results, _ = eight_workers
    assert len(results) == N_WORKERS
    report = describe(results)
    assert [r.returncode for r in results] == [0] * N_WORKERS, report
    for result in results:
        assert "Traceback" not in result.stderr, report
        assert "Error" not in result.stderr, report
        # Optuna's journal lock complains ("... to acquire the lock file") before it fails.
        assert not re.search(r"\block", result.stderr, re.I), report
        # Each worker says why it stopped: the global budget, not a limit of its own.
        assert re.search(r"^Worker done: \d+ trials .*; budget spent: ", result.stdout, re.M), report


def test_exactly_the_budget_is_finished_and_nothing_is_left_running(eight_workers):
    journal, results, study = eight_workers
    trials = study.get_trials(deepcopy=False)
    states = collections.Counter(t.state for t in trials)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == N_TRIALS, (states, describe(results))
    assert states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0, states
    # Pruner "none": every finished trial ran to the end.
    assert all(t.state == TrialState.COMPLETE for t in finished)

    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), numbers
    assert sorted(numbers) == list(range(len(trials)))  # none lost in between

    # A failed trial is only ever a race hand-back: asked for when the budget was already
    # taken, and closed unrun.
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.user_attrs.get(OVER_BUDGET_ATTR) is True, trial.user_attrs
            assert "config" not in trial.user_attrs
            assert trial.intermediate_values == {}

    # What the workers printed adds up to what the storage holds.
    printed = sum(
        int(n) for r in results for n in re.findall(r"^Worker done: (\d+) trials", r.stdout, re.M)
    )
    assert printed == N_TRIALS, describe(results)


def test_every_finished_trial_records_what_users_compare(eight_workers):
    _, _, study = eight_workers
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert finished
    workers = set()
    for trial in finished:
        attrs = trial.user_attrs
        missing = [key for key in RECORDED_ATTRS if key not in attrs]
        assert not missing, (trial.number, missing)
        config = attrs["config"]
        assert set(config) >= {"data", "model", "train"}
        assert config["model"]["name"] == "mlp" and config["train"]["epochs"] == 2
        assert config["train"]["lr"] == pytest.approx(trial.params["train.lr"])
        assert isinstance(attrs["params_total"], int) and attrs["params_total"] > 0
        assert attrs["seconds_per_epoch"] > 0
        assert attrs["device"] == "cpu"
        assert attrs["seed"] == 0
        assert {"hpo", "optuna", "torch", "python"} <= set(attrs["versions"])
        curves = attrs["curves"]
        for key in CURVES:
            assert len(curves[key]) == 2, (trial.number, key, curves)
        assert all(0.0 <= a <= 1.0 for a in curves["val_accuracy"])
        assert trial.value == pytest.approx(max(curves["val_accuracy"]))
        assert sorted(trial.intermediate_values) == [1, 2]  # one report per epoch
        workers.add(attrs["worker"]["pid"])
    # The trials really were shared out, not run by one process while the others idled.
    assert len(workers) > 1


def test_workers_started_one_by_one_do_not_repeat_each_others_params(eight_workers):
    # Eight workers with one spec (sampler seed 0) and no --rank: a continuous learning rate
    # drawn twice means two workers shared a sampler seed.
    _, _, study = eight_workers
    draws = [t.params["train.lr"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    assert len(draws) == N_TRIALS
    assert len(set(draws)) == len(draws), sorted(draws)


def test_the_study_still_carries_its_spec(eight_workers):
    _, _, study = eight_workers
    spec = study.user_attrs[SPEC_ATTR]
    assert spec["name"] == STUDY
    assert spec["budget"]["n_trials"] == N_TRIALS


def test_supervisor_with_3_processes_finishes_the_global_budget_exactly(tmp_path):
    journal = tmp_path / "pool.journal"
    spec = write_spec(tmp_path, "pool-3", n_trials=9, epochs=1)
    created = run_hpo("study", "create", str(spec), "--storage", str(journal), cwd=tmp_path)
    assert created.returncode == 0, describe([created])

    result = run_hpo("worker", "pool-3", "--processes", "3", "--storage", str(journal),
                     env=hpo_env(), cwd=tmp_path)
    assert result.returncode == 0, describe([result])
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, describe([result])
    # One summary line per child, each tagged with its own rank: consecutive numbers from
    # a base rank, so that the children's sampler seeds differ.
    done = re.findall(r"^\[worker (\d+)\] Worker done: (\d+) trials", result.stdout, re.M)
    ranks = sorted(int(rank) for rank, _ in done)
    assert len(ranks) == 3 and ranks == list(range(ranks[0], ranks[0] + 3)), result.stdout
    assert sum(int(n) for _, n in done) == 9, result.stdout

    trials = load(journal, "pool-3").get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 9
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(t.user_attrs.get(OVER_BUDGET_ATTR) for t in trials if t.state == TrialState.FAIL)
    assert len({t.number for t in trials}) == len(trials)
    # The trials were run by those children, and the storage was the one given.
    assert {t.user_attrs["worker"]["rank"] for t in finished} <= set(ranks)
    assert not (tmp_path / "hpo-studies.journal").exists()
