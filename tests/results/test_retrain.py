"""``hpo retrain``: the chosen config on train+val, K seeds, and the test split only with --test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.models.registry import create_model, parse_model_config
from hpo.storage.urls import resolve_storage
from hpo.study.studies import load_study
from hpo.training import DataConfig
from hpo.training import data as data_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def test_split_calls(monkeypatch):
    """Counts every load of the held-out test split in this process."""
    calls = []
    real = data_module.load_test_split

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(data_module, "load_test_split", counting)
    return calls


def _invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def _study(tmp_path, monkeypatch, spec_text: str, name: str):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    monkeypatch.setenv("HPO_KEEP_WEIGHTS", "none")
    (tmp_path / "spec.yaml").write_text(spec_text)
    _invoke("study", "create", "spec.yaml", "--name", name)
    _invoke("worker", name, "--rank", "0")
    return load_study(name, resolve_storage(None))


def _digits_cnn_one_trial() -> str:
    """The digits CNN example with its fixed (default) config, one trial: a decent config."""
    text = (ROOT / "search_spaces" / "digits_cnn.yaml").read_text()
    text = text.replace("n_trials: 30", "n_trials: 1")
    return text[: text.index("search:")] + "search: {}\n"


@pytest.mark.slow
def test_tuning_never_sees_the_test_split_and_retrain_tests_once(tmp_path, monkeypatch, test_split_calls):
    loaded = _study(tmp_path, monkeypatch, _digits_cnn_one_trial(), "cnn")
    assert test_split_calls == []  # a whole worker run never loaded it

    cfg = DataConfig.model_validate(loaded.study.trials[0].user_attrs["config"]["data"])
    splits = data_module._plan_for(cfg).splits
    test_part, test_idx = splits["test"]
    for name in ("train", "val"):
        part, idx = splits[name]
        assert part != test_part or not np.intersect1d(idx, test_idx).size, name

    result = _invoke("retrain", "cnn", "--test", "--seeds", "2")
    assert len(test_split_calls) == 1
    out = tmp_path / "retrain-cnn-0"
    assert sorted(p.name for p in out.iterdir()) == [
        "classification_report.json", "classification_report.txt", "confusion_matrix.png",
        "metrics.json", "weights-seed0.pt", "weights-seed1.pt",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1] and metrics["test_split_used"] is True
    assert metrics["train_images"] == len(splits["train"][1]) + len(splits["val"][1])
    test = metrics["test"]
    assert len(test["accuracy"]["values"]) == 2
    assert test["accuracy"]["mean"] >= 0.97, test
    assert test["images"] == len(test_idx)
    assert [r["test_accuracy"] for r in metrics["per_seed"]] == test["accuracy"]["values"]
    assert "Test accuracy" in result.output and "seed 1: epoch 12/12" in result.output
    report = json.loads((out / "classification_report.json").read_text())
    assert report["accuracy"] == test["accuracy"]["values"][0]
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    net = create_model(parse_model_config(metrics["model"]["config"]), tuple(metrics["model"]["in_shape"]),
                       metrics["model"]["num_classes"])
    net.load_state_dict(torch.load(out / "weights-seed1.pt", weights_only=True))

    recorded = load_study("cnn", resolve_storage(None)).study.user_attrs["hpo:retrain:0"]
    assert recorded["seeds"] == [0, 1] and recorded["test"]["accuracy"] == test["accuracy"]


MLP = """\
name: mlp
budget: {n_trials: 2}
sampler: {name: random, seed: 0}
pruner: {name: none}
data: {name: digits}
model: {name: mlp, n_layers: 1, width: 32}
train: {epochs: 2, batch_size: 64, early_stopping: {patience: 1}}
search: {train.lr: {low: 1e-3, high: 1e-2, log: true}}
"""


def test_retrain_without_test_leaves_the_test_split_alone(tmp_path, monkeypatch, test_split_calls):
    _study(tmp_path, monkeypatch, MLP, "mlp")
    result = _invoke("retrain", "mlp", "--trial", "1", "--output", "out")
    assert test_split_calls == []
    assert "The test split was not touched (add --test for the final number)." in result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["trial"] == 1 and metrics["test"] is None and metrics["test_split_used"] is False
    assert metrics["per_seed"][0]["seed"] == 0 and metrics["epochs"] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "weights-seed0.pt"]
    assert 0 < metrics["train"]["accuracy"]["mean"] <= 1 and metrics["train"]["accuracy"]["std"] is None


def test_retrain_names_a_missing_trial(tmp_path, monkeypatch):
    _study(tmp_path, monkeypatch, MLP, "mlp")
    result = CliRunner().invoke(cli, ["retrain", "mlp", "--trial", "7"])
    assert result.exit_code != 0
    assert "Error: study 'mlp' has no trial 7 (trials 0..1)" in result.output
