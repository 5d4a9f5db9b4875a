"""A worker's start: a study with nothing left to run is answered at once, with only optuna
and the stored spec loaded (never torch, never the dataset), by one worker and by a pool's
parent before it starts any child; a trial left behind by a dead worker still reopens it."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo.spec import load_spec
from hpo.storage.urls import resolve_storage
from hpo.study.attrs import FAIL_REASON, WORKER, WorkerIdentity
from hpo.study.studies import create_study
from hpo.worker.loop import nothing_to_do
from tests.specs import describe, hpo_env, run_hpo, worker_lines, write_spec

LR = FloatDistribution(1e-4, 1e-1, log=True)


def make_study(tmp_path: Path, name: str, **spec_options) -> tuple[optuna.Study, Path]:
    """A study of the tiny digits spec, created in a journal under ``tmp_path``."""
    journal = tmp_path / "studies.journal"
    spec = load_spec(write_spec(tmp_path, name, **spec_options))
    study, _ = create_study(spec, resolve_storage(str(journal)))
    return study, journal


def spent_study(tmp_path: Path, name: str = "spent") -> Path:
    """A study whose one-trial budget is spent (its trial added as finished: no training)."""
    study, journal = make_study(tmp_path, name, n_trials=1)
    study.add_trial(optuna.trial.create_trial(params={"train.lr": 0.01}, distributions={"train.lr": LR},
                                              value=0.5))
    return journal


def imported(profile: str) -> set[str]:
    """Top-level packages named in ``-X importtime`` output (every process that wrote to it)."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", profile, re.MULTILINE)
    return {name.split(".")[0] for name in names}


def profiled_env(journal: Path) -> dict[str, str]:
    # PYTHONPROFILEIMPORTTIME reaches a pool's children too: each would list its imports.
    return hpo_env(str(journal), PYTHONPROFILEIMPORTTIME="1")


@pytest.mark.subprocess
def test_a_worker_on_a_spent_study_says_so_without_importing_torch(tmp_path):
    journal = spent_study(tmp_path)
    result = run_hpo("worker", "spent", "--quiet", env=profiled_env(journal), cwd=tmp_path)
    assert result.returncode == 0, describe([result])
    assert worker_lines(result.stdout) == [
        "Worker done: 0 trials (0 complete, 0 pruned, 0 failed); budget spent: 1 of 1 trials finished"]
    modules = imported(result.stderr)
    assert {"optuna", "hpo"} <= modules  # the profile was written
    assert not modules & {"torch", "sklearn", "torchvision"}, sorted(modules)


@pytest.mark.subprocess
def test_a_pool_on_a_spent_study_starts_no_child(tmp_path):
    journal = spent_study(tmp_path)
    result = run_hpo("worker", "spent", "--processes", "2", env=profiled_env(journal), cwd=tmp_path)
    assert result.returncode == 0, describe([result])
    # No child: none printed its "[worker N] ..." lines, and the parent reported none.
    assert result.stdout.splitlines() == ["Workers not started: budget spent: 1 of 1 trials finished"]
    assert "torch" not in imported(result.stderr)


@pytest.mark.subprocess
def test_a_pool_on_a_study_stopped_by_failures_exits_1_with_the_reason(tmp_path):
    study, journal = make_study(tmp_path, "failing", n_trials=5, max_failed_trials=1)
    study.add_trial(optuna.trial.create_trial(params={"train.lr": 0.01}, distributions={"train.lr": LR},
                                              state=TrialState.FAIL, user_attrs={FAIL_REASON: "boom"}))
    result = run_hpo("worker", "failing", "--processes", "2", env=profiled_env(journal), cwd=tmp_path)
    reason = ("1 trials failed, reaching budget.max_failed_trials = 1; "
              "see 'hpo study show' for the reasons")
    assert result.returncode == 1, describe([result])
    assert result.stdout.splitlines() == [f"Workers not started: {reason}"]
    assert f"Error: {reason}\n" in result.stderr
    assert "torch" not in imported(result.stderr)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_trial_left_behind_by_a_dead_worker_reopens_a_spent_looking_budget(tmp_path):
    """Its trial counts as claimed until swept: the check sweeps first, so the retry runs."""
    study, journal = make_study(tmp_path, "orphaned", n_trials=1)
    orphan = study.ask({"train.lr": LR})
    orphan.set_user_attr(WORKER, WorkerIdentity(socket.gethostname(), dead_pid(), 0).as_attr())
    target = resolve_storage(str(journal))
    assert nothing_to_do("orphaned", target) is None
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # swept, and its retry enqueued


def test_nothing_to_do_names_the_spent_budget(tmp_path):
    journal = spent_study(tmp_path)
    report = nothing_to_do("spent", resolve_storage(str(journal)))
    assert report is not None
    assert (report.stop_reason, report.exit_code, report.outcomes) == (
        "budget spent: 1 of 1 trials finished", 0, [])
