"""Per-trial artifacts: curves, confusion matrices and weights reach the study's store."""

from __future__ import annotations

from xml.etree import ElementTree

import optuna
import pytest
import torch
from click.testing import CliRunner
from matplotlib.image import imread

from hpo.artifacts.store import open_store, study_location
from hpo.artifacts.trial_files import keep_policy, save_trial_artifacts
from hpo.cli.main import cli
from hpo.errors import UsageError
from hpo.models.registry import create_model, parse_model_config
from hpo.storage.urls import resolve_storage
from hpo.study.studies import load_study
from hpo.training import EpochMetrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SPEC = """\
name: {name}
budget: {{n_trials: {n}}}
sampler: {{name: random, seed: 0}}
pruner: {{name: none}}
data: {{name: digits}}
model: {{name: mlp, n_layers: 1, width: 32}}
train: {{epochs: 2, batch_size: 64}}
search: {{train.lr: {{low: 1e-4, high: 3e-2, log: true}}}}
"""


@pytest.fixture
def tuned(tmp_path, monkeypatch):
    """Create a tiny digits study and run one worker on it; returns its loaded study."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)

    def run(name: str = "arts", n: int = 2):
        (tmp_path / "spec.yaml").write_text(SPEC.format(name=name, n=n))
        for args in (["study", "create", "spec.yaml"], ["worker", name, "--rank", "0"]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, result.output
        return load_study(name, resolve_storage(None)).study

    return run


def _read(study, artifact_id: str, tmp_path, name: str) -> bytes:
    path = tmp_path / f"download-{name}"
    optuna.artifacts.download_artifact(artifact_store=open_store(study_location(study)),
                                       artifact_id=artifact_id, file_path=str(path))
    return path.read_bytes()


def test_every_completed_trial_gets_curve_confusion_matrix_and_weights(tuned, tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_KEEP_WEIGHTS", "all")
    study = tuned()
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:
        arts = trial.user_attrs["artifacts"]
        assert sorted(arts) == ["confusion_matrix.png", "learning_curve.svg", "weights.pt"]
        metas = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
        assert sorted(m.artifact_id for m in metas) == sorted(arts.values())
        assert {m.filename: m.mimetype for m in metas}["learning_curve.svg"] == "image/svg+xml"
        data = _read(study, arts["confusion_matrix.png"], tmp_path, f"{trial.number}-cm")
        assert data[:8] == PNG_MAGIC
        (tmp_path / "check.png").write_bytes(data)
        assert imread(tmp_path / "check.png").ndim == 3  # matplotlib decodes it
        curve = ElementTree.fromstring(_read(study, arts["learning_curve.svg"], tmp_path, f"{trial.number}-c"))
        # 2 epochs: 4 lines (train loss, val loss, val accuracy and the recorded train accuracy)
        assert len(list(curve.iter("{http://www.w3.org/2000/svg}polyline"))) == 4
        (tmp_path / "w.pt").write_bytes(_read(study, arts["weights.pt"], tmp_path, f"{trial.number}-w"))
        state = torch.load(tmp_path / "w.pt", weights_only=True)
        io = trial.user_attrs["model_io"]
        net = create_model(parse_model_config(trial.user_attrs["config"]["model"]),
                           tuple(io["in_shape"]), io["num_classes"])
        net.load_state_dict(state)  # strict: every key and shape matches
        assert 0 < trial.user_attrs["weights_mb"] < 1
        assert "artifact_error" not in trial.user_attrs


def test_best_k_uploads_weights_only_for_trials_in_the_best_k_so_far(tuned, monkeypatch):
    monkeypatch.setenv("HPO_KEEP_WEIGHTS", "best:1")
    trials = tuned(n=4).get_trials()
    for i, trial in enumerate(trials):
        better_before = sum(t.value > trial.value for t in trials[:i])
        has_weights = "weights.pt" in trial.user_attrs["artifacts"]
        assert has_weights == (better_before == 0), (i, [t.value for t in trials])
        assert ("weights_skipped" in trial.user_attrs) == (not has_weights)
        assert "learning_curve.svg" in trial.user_attrs["artifacts"]
    assert "weights.pt" in trials[0].user_attrs["artifacts"]


def test_an_artifact_failure_never_fails_the_trial(tuned, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("hpo.artifacts.trial_files._upload", broken)
    for trial in tuned().get_trials():
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.user_attrs["artifact_error"] == "OSError: No space left on device"
        assert "artifacts" not in trial.user_attrs


def _epochs(n: int) -> list[EpochMetrics]:
    return [EpochMetrics(epoch=e, train_loss=1 / e, val_loss=1.2 / e, val_accuracy=0.5 + e / 10,
                         seconds=0.1, lr=1e-3) for e in range(1, n + 1)]


def test_a_failed_trial_gets_its_learning_curve_only(tmp_path):
    from hpo.artifacts.store import record_store

    study = optuna.create_study()
    record_store(study, {"kind": "file", "path": str(tmp_path / "store")})
    trial = study.ask()
    attrs = save_trial_artifacts(study, trial, _epochs(2))  # as the worker's _fail calls it
    uploaded = attrs["artifacts"]
    assert list(attrs) == ["artifacts"] and list(uploaded) == ["learning_curve.svg"]
    metas = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=study._storage)
    assert [m.artifact_id for m in metas] == [uploaded["learning_curve.svg"]]
    path = tmp_path / "store" / uploaded["learning_curve.svg"]
    assert path.read_text().startswith("<svg ")


def test_a_study_without_a_recorded_store_gets_no_artifacts():
    study = optuna.create_study()  # an older study: no hpo:artifact_store attribute
    trial = study.ask()
    assert save_trial_artifacts(study, trial, _epochs(1)) == {}
    assert study.trials[0].user_attrs == {}


@pytest.mark.parametrize("value,expected", [
    ("all", ("all", 0)), ("none", ("none", 0)), ("best:2", ("best", 2)), (" BEST:10 ", ("best", 10)),
])
def test_keep_policy(value, expected):
    assert keep_policy(value) == expected


def test_keep_policy_default_and_errors(monkeypatch):
    monkeypatch.delenv("HPO_KEEP_WEIGHTS", raising=False)
    assert keep_policy() == ("best", 3)
    with pytest.raises(UsageError, match=r"HPO_KEEP_WEIGHTS='best:0' is not a weights policy "
                                         r"\(expected all, none or best:K with K >= 1\)"):
        keep_policy("best:0")
