"""The grid sampler and handed-back trials: every grid point runs exactly once, whatever
workers are stopped mid-trial.

A real ``hpo worker`` is SIGTERMed in the middle of one of its trials (it hands the trial back:
failed, and a retry with the same parameters enqueued); a second worker finishes the study.
Workers of different ranks used to shuffle the grid differently, while the grid ids Optuna
stores in trials index into that order: the retry's number slot pushed the grid onto another
worker's order, which ran one point twice and never another.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.spec.strategies import GridOptions, SpaceFacts, build_sampler
from hpo.storage.urls import open_storage, resolve_storage
from tests.specs import describe, hpo_env, run_hpo, start_hpo, wait_all

GRID = [0.01, 0.02, 0.03, 0.04]
SPEC = f"""\
name: grid
objective: {{metric: val_accuracy, direction: maximize}}
budget: {{n_trials: 4, max_retries: 2, checkpoint_interval: 0}}
sampler: {{name: grid, seed: 0}}
pruner: {{name: none}}
data: {{name: digits, val_fraction: 0.2, test_fraction: 0.2, split_seed: 0}}
model: {{name: mlp, n_layers: 1, width: 16, activation: relu}}
train: {{epochs: 60, batch_size: 16, optimizer: sgd, lr: 0.01, seed: 0}}
search:
  train.lr: {{choices: {GRID}}}
"""


def trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(resolve_storage(str(root / "studies.journal")))
    return optuna.load_study(study_name="grid", storage=storage).get_trials(deepcopy=False)


def wait_until_mid_trial(proc, root: Path, number: int) -> None:
    """Until trial ``number`` is running and has saved a checkpoint."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            running = [t for t in trials(root) if t.state == TrialState.RUNNING and t.number == number]
        except Exception:  # noqa: BLE001 - the journal is being written: look again
            running = []
        if running and running[0].user_attrs.get("checkpoint"):
            return
        time.sleep(0.05)
    (result,) = wait_all([proc])
    raise AssertionError(f"trial {number} never ran mid-way\n" + describe([result]))


def test_workers_of_different_ranks_share_one_grid_order():
    """Optuna records a grid id per trial, an index into the sampler's shuffled grid: workers
    that alternate on one study must read the same index as the same point."""
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="grid", storage=storage)
    workers = [optuna.load_study(study_name="grid", storage=storage,
                                 sampler=build_sampler(GridOptions(seed=0), rank=rank,
                                                       space=SpaceFacts(grid={"train.lr": GRID})))
               for rank in (0, 1, 2, 3)]
    ran = []
    for worker in workers:  # each worker runs one trial, in turn
        trial = worker.ask()
        ran.append(trial.suggest_categorical("train.lr", GRID))
        worker.tell(trial, 0.0)
    assert sorted(ran) == GRID


@pytest.mark.slow
@pytest.mark.subprocess
def test_each_grid_point_completes_exactly_once_when_a_worker_hands_a_trial_back(tmp_path):
    (tmp_path / "grid.yaml").write_text(SPEC)
    env = hpo_env(storage=str(tmp_path / "studies.journal"))
    created = run_hpo("study", "create", "grid.yaml", "--artifacts", "artifacts", env=env, cwd=tmp_path)
    assert created.returncode == 0, describe([created])

    victim = start_hpo("worker", "grid", "--quiet", "--rank", "0", env=env, cwd=tmp_path)
    wait_until_mid_trial(victim, tmp_path, 0)
    victim.send_signal(signal.SIGTERM)
    (stopped,) = wait_all([victim])
    assert stopped.returncode == 0 and "1 handed back" in stopped.stdout, describe([stopped])

    finisher = run_hpo("worker", "grid", "--quiet", "--rank", "1", env=env, cwd=tmp_path)
    assert finisher.returncode == 0, describe([stopped, finisher])
    done = [t for t in trials(tmp_path) if t.state == TrialState.COMPLETE]
    completed = Counter(t.params["train.lr"] for t in done)
    assert completed == Counter(GRID), describe([stopped, finisher])
    assert "budget spent: 4 of 4 trials finished" in finisher.stdout
