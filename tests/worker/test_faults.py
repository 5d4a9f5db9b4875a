"""Faults on the embedded store: a worker SIGKILLed or SIGTERMed mid-trial.

Each run is a real ``hpo worker`` subprocess training the digits MLP; the killed trial is
retried by the next worker and resumes from its checkpoint. Training is deterministic on the
CPU with one thread, so the resumed trial's curve must equal, epoch for epoch, that of the
same trial run without interruption.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.storage.urls import open_storage, resolve_storage
from tests.specs import describe, hpo_env, run_hpo, start_hpo, wait_all

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

EPOCHS = 30
SPEC = """\
name: {name}
objective: {{metric: val_accuracy, direction: maximize}}
budget: {{n_trials: 1, max_retries: 2, checkpoint_interval: 0}}  # a checkpoint every epoch
sampler: {{name: random, seed: 0}}
pruner: {{name: none}}
data: {{name: digits, val_fraction: 0.2, test_fraction: 0.2, split_seed: 0, augment: light}}
model: {{name: mlp, n_layers: 1, width: 16, activation: relu, dropout: 0.1}}
train: {{epochs: {epochs}, batch_size: 16, optimizer: sgd, lr: 0.01, momentum: 0.9, seed: 0, schedule: cosine}}
search: {{}}
"""


def create(root: Path, name: str) -> dict[str, str]:
    (root / f"{name}.yaml").write_text(SPEC.format(name=name, epochs=EPOCHS))
    env = hpo_env(storage=str(root / "studies.journal"))
    created = run_hpo("study", "create", str(root / f"{name}.yaml"), "--artifacts", str(root / "artifacts"),
                      env=env, cwd=root)
    assert created.returncode == 0, describe([created])
    return env


def trials(root: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(resolve_storage(str(root / "studies.journal")))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def wait_for_checkpoint(proc, root: Path, name: str, *, min_epoch: int) -> optuna.trial.FrozenTrial:
    """The running trial once it has saved a checkpoint after ``min_epoch`` epochs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            running = [t for t in trials(root, name) if t.state == TrialState.RUNNING]
        except Exception:  # noqa: BLE001 - the journal is being written: look again
            running = []
        for trial in running:
            match = re.match(r"checkpoint-\d+-e(\d+)b0-", trial.user_attrs.get("checkpoint", ""))
            if match and int(match.group(1)) >= min_epoch:
                return trial
        time.sleep(0.05)
    (result,) = wait_all([proc])
    raise AssertionError("no checkpoint seen\n" + describe([result]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The curve of the trial run without interruption."""
    root = tmp_path_factory.mktemp("reference")
    env = create(root, "ref")
    done = run_hpo("worker", "ref", "--quiet", env=env, cwd=root)
    assert done.returncode == 0, describe([done])
    (trial,) = trials(root, "ref")
    assert trial.state == TrialState.COMPLETE and len(trial.intermediate_values) == EPOCHS
    return trial


def assert_resumed_like_the_reference(root: Path, name: str, reference, *, interrupted_at: int) -> None:
    first, retry = trials(root, name)
    assert first.state == TrialState.FAIL and first.user_attrs["retried"] is True
    assert retry.state == TrialState.COMPLETE, retry.user_attrs.get("fail_reason")
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["retries"] == 1
    assert retry.user_attrs["resumed_from"]["epoch"] >= interrupted_at
    # The same number of total epochs as an uninterrupted trial, and the very same curve.
    assert retry.user_attrs["epochs_trained"] == EPOCHS
    assert retry.intermediate_values == reference.intermediate_values
    assert retry.value == reference.value
    assert retry.user_attrs["curves"]["val_loss"] == reference.user_attrs["curves"]["val_loss"]
    # The checkpoints are gone once the trial is over; the trial's own artifacts stay.
    assert not list((root / "artifacts").glob("checkpoint-*"))


def test_a_sigkilled_trial_is_failed_retried_and_resumed_from_its_checkpoint(tmp_path, reference):
    env = create(tmp_path, "killed")
    victim = start_hpo("worker", "killed", "--quiet", env=env, cwd=tmp_path)
    caught = wait_for_checkpoint(victim, tmp_path, "killed", min_epoch=3)
    os.kill(victim.pid, signal.SIGKILL)
    wait_all([victim])

    rescuer = run_hpo("worker", "killed", "--quiet", env=env, cwd=tmp_path)
    assert rescuer.returncode == 0, describe([rescuer])
    assert "trial 0 was left running by a worker that is gone" in rescuer.stdout
    first = trials(tmp_path, "killed")[0]
    assert first.user_attrs["fail_reason"] == f"worker process {victim.pid} on {os.uname().nodename} died"
    epoch = int(re.match(r"checkpoint-0-e(\d+)", caught.user_attrs["checkpoint"]).group(1))
    assert_resumed_like_the_reference(tmp_path, "killed", reference, interrupted_at=epoch)


def test_sigterm_checkpoints_mid_epoch_hands_the_trial_back_and_exits_0(tmp_path, reference):
    env = create(tmp_path, "preempted")
    worker = start_hpo("worker", "preempted", "--quiet", env=env, cwd=tmp_path)
    wait_for_checkpoint(worker, tmp_path, "preempted", min_epoch=2)
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    (stopped,) = wait_all([worker])
    took = time.monotonic() - sent
    assert stopped.returncode == 0, describe([stopped])
    assert took < 10, f"the worker took {took:.1f} s to stop"
    first, waiting = trials(tmp_path, "preempted")
    reason = first.user_attrs["fail_reason"]
    assert re.fullmatch(r"stopped by SIGTERM at (epoch \d+, batch \d+|the end of epoch \d+) \(checkpoint saved\)",
                        reason)
    assert f"trial 0 {reason}; handed back to be resumed by the next worker" in stopped.stdout
    assert "1 handed back); stopped by SIGTERM" in stopped.stdout
    assert waiting.state == TrialState.WAITING and waiting.user_attrs["resume_from"] == first.user_attrs["checkpoint"]

    resumed = run_hpo("worker", "preempted", "--quiet", env=env, cwd=tmp_path)
    assert resumed.returncode == 0, describe([resumed])
    assert_resumed_like_the_reference(tmp_path, "preempted", reference, interrupted_at=2)
    # Handing back is no failure of the configuration: it does not count towards max_failed_trials.
    show = run_hpo("study", "show", "preempted", "--format", "json", env=env, cwd=tmp_path)
    assert show.returncode == 0, describe([show])
