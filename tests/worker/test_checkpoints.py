"""Checkpoints in the study's artifact store: a worker killed between pointing its trial at a
new checkpoint and removing the old one leaves no file behind once the trial is retried."""

from __future__ import annotations

import optuna
from optuna.artifacts import FileSystemArtifactStore

from hpo.study.attrs import CHECKPOINT as CHECKPOINT_ATTR
from hpo.study.attrs import CHECKPOINT_SUPERSEDED as SUPERSEDED_ATTR
from hpo.worker.checkpoints import TrialCheckpoints
from hpo.worker.recovery import fail_and_retry


def _state(epoch: int) -> dict:
    return {"position": {"epoch": epoch, "batch": 0}, "weights": list(range(epoch))}


def test_a_file_left_by_a_worker_killed_mid_save_is_removed_by_the_retry(tmp_path, monkeypatch):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = FileSystemArtifactStore(str(store_dir))
    study = optuna.create_study()
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    checkpoints = TrialCheckpoints(store, trial)
    checkpoints.save(_state(1))
    monkeypatch.setattr(checkpoints, "_remove", lambda artifact_id: None)  # killed right after the write
    checkpoints.save(_state(2))
    first, second = sorted(p.name for p in store_dir.iterdir())  # both files are still there
    frozen = study._storage.get_trial(trial._trial_id)
    assert frozen.user_attrs[CHECKPOINT_ATTR] == second and frozen.user_attrs[SUPERSEDED_ATTR] == first

    assert fail_and_retry(study, frozen, "worker process 1 died", max_retries=1)
    retry = study.ask()
    assert retry.user_attrs[SUPERSEDED_ATTR] == first
    resumed = TrialCheckpoints(store, retry)  # the retry removes the left-over file at once
    assert [p.name for p in store_dir.iterdir()] == [second]
    assert resumed.load()["position"]["epoch"] == 2
    resumed.discard()
    assert list(store_dir.iterdir()) == []
