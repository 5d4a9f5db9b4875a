"""The README's Colab recipe, played out: a worker killed mid-trial on a machine that never
comes back (a recycled runtime), then a fresh "runtime" that resumes the study from Python
with ``sole_worker=True``: the half-trained trial is failed, retried and resumed from its
checkpoint, and trains the same total number of epochs."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from hpo.storage.optuna_internals import storage_of, trial_id_of
from hpo.study.attrs import CHECKPOINT, EPOCHS_TRAINED, FAIL_REASON, RESUMED_FROM, RETRY_OF, WORKER
from tests.specs import describe, hpo_env, start_hpo, wait_all

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

EPOCHS = 12
SPEC = f"""\
name: colab
objective: {{metric: val_accuracy, direction: maximize}}
budget: {{n_trials: 1, max_retries: 2, checkpoint_interval: 0}}  # a checkpoint every epoch
sampler: {{name: random, seed: 0}}
pruner: {{name: none}}
data: {{name: digits, val_fraction: 0.2, test_fraction: 0.2, split_seed: 0}}
model: {{name: mlp, n_layers: 1, width: 16, activation: relu}}
train: {{epochs: {EPOCHS}, batch_size: 16, optimizer: sgd, lr: 0.01, momentum: 0.9, seed: 0}}
search: {{}}
"""


def running_with_checkpoint(study: optuna.Study, proc, *, min_epoch: int) -> optuna.trial.FrozenTrial:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            match = re.match(r"checkpoint-\d+-e(\d+)b0-", trial.user_attrs.get(CHECKPOINT, ""))
            if match and int(match.group(1)) >= min_epoch:
                return trial
        time.sleep(0.05)
    (result,) = wait_all([proc])
    raise AssertionError("no checkpoint seen\n" + describe([result]))


def test_a_fresh_runtime_resumes_the_recycled_ones_trial_from_its_checkpoint(tmp_path: Path):
    drive = tmp_path / "drive"  # the mounted drive: journal and artifacts outlive the runtime
    drive.mkdir()
    (tmp_path / "digits_mlp.yaml").write_text(SPEC)
    journal = drive / "studies.journal"
    created = hpo.create_study(tmp_path / "digits_mlp.yaml", storage=journal, if_exists="reuse")
    assert created.artifacts == str(drive / "hpo-artifacts")

    old_runtime = start_hpo("worker", "colab", "--storage", str(journal), "--quiet", env=hpo_env(), cwd=tmp_path)
    caught = running_with_checkpoint(created.study, old_runtime, min_epoch=3)
    os.kill(old_runtime.pid, signal.SIGKILL)  # recycled: no signal handler runs
    wait_all([old_runtime])
    # ... and its machine is gone with it: the trial names a host that is not this one.
    storage_of(created.study).set_trial_user_attr(trial_id_of(caught), WORKER,
                                                  {"host": "recycled-vm", "pid": old_runtime.pid, "rank": 0})

    # The fresh runtime runs the README's cell again.
    again = hpo.create_study(tmp_path / "digits_mlp.yaml", storage=journal, if_exists="reuse")
    assert again.created is False
    report = hpo.run_worker("colab", storage=journal, device="cpu", progress=False, sole_worker=True)
    first, retry = created.study.get_trials(deepcopy=False)
    assert first.state == TrialState.FAIL and "sole_worker=True" in first.user_attrs[FAIL_REASON]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs[RETRY_OF] == 0
    checkpoint_epoch = int(re.match(r"checkpoint-0-e(\d+)", caught.user_attrs[CHECKPOINT]).group(1))
    assert retry.user_attrs[RESUMED_FROM]["epoch"] >= checkpoint_epoch >= 3
    assert retry.user_attrs[EPOCHS_TRAINED] == EPOCHS and len(retry.intermediate_values) == EPOCHS
    assert [o.number for o in report.outcomes] == [1] and report.exit_code == 0
    assert not list((drive / "hpo-artifacts").glob("checkpoint-*"))  # removed once the trial ended
