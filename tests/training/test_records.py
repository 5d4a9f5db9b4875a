"""What a trial records beyond its objective: train accuracy per epoch (from the training
batches' own predictions), class counts per split with class names, and the class weights the
training loss applied; recorded by the worker and shown by ``hpo study show --trial``."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.models import MLPConfig, create_model
from hpo.storage.urls import resolve_storage
from hpo.study.attrs import trial_records
from hpo.study.studies import load_study
from hpo.training import DataConfig, TrainConfig, train_model
from hpo.training.data import load_splits
from tests.specs import run_cli_study, spec_text
from tests.training.test_data_folder import make_folder

TINY = MLPConfig(n_layers=1, width=16)
FOLDER_COUNTS = {"ant": 24, "bee": 12, "cat": 6}  # imbalanced: 4 : 2 : 1


def test_train_accuracy_is_the_training_batches_own_predictions():
    # One batch of every training image and an lr too small to move a weight: the epoch's
    # train accuracy is the freshly initialised model's accuracy on the training split.
    cfg = TrainConfig(epochs=2, batch_size=4096, optimizer="sgd", momentum=0.0, lr=1e-30)
    result = train_model(DataConfig(), TINY, cfg)
    splits = load_splits(DataConfig())
    torch.manual_seed(cfg.seed)
    net = create_model(TINY, splits.in_shape, splits.num_classes)
    ((x, y),) = splits.train.batches(4096)
    with torch.no_grad():
        expected = (net(x).argmax(1) == y).float().mean().item()
    assert [m.train_accuracy for m in result.history] == [pytest.approx(expected)] * 2


def test_train_accuracy_is_recorded_for_every_epoch_and_learns():
    result = train_model(DataConfig(), TINY, TrainConfig(epochs=3, lr=1e-2, batch_size=64))
    accuracies = [m.train_accuracy for m in result.history]
    assert len(accuracies) == 3
    assert all(a is not None and 0.0 <= a <= 1.0 for a in accuracies)
    assert accuracies[-1] > accuracies[0]  # digits at lr 1e-2: it learns in three epochs


def test_a_run_resumed_mid_epoch_records_the_uninterrupted_train_accuracy():
    from hpo.errors import Preempted
    from tests.training.test_training_checkpoint import DATA, MODEL, InMemory, stop_after

    train = TrainConfig(epochs=2, batch_size=64, seed=0)
    reference = train_model(DATA, MODEL, train)
    batches = -(-len(load_splits(DATA).train) // 64)
    store = InMemory()
    with pytest.raises(Preempted):  # 5 batches into epoch 2
        train_model(DATA, MODEL, train, checkpoints=store, stop_requested=stop_after(1 + batches + 1 + 5))
    assert store.saves[-1]["correct"] > 0
    resumed = train_model(DATA, MODEL, train, checkpoints=store)
    assert [m.train_accuracy for m in resumed.history] == [m.train_accuracy for m in reference.history]


def _class_counts(result):
    return result.data_report["class_counts"], result.data_report["class_names"]


def test_data_report_names_classes_and_says_no_weights_by_default():
    result = train_model(DataConfig(), TINY, TrainConfig(epochs=1))
    splits = load_splits(DataConfig())
    counts, names = _class_counts(result)
    assert names == [str(c) for c in range(10)]
    assert sum(counts["train"]) == len(splits.train) and sum(counts["val"]) == len(splits.val)
    assert result.data_report["class_weights"] is None  # train.class_weights none: none applied


def test_balanced_weights_applied_are_recorded_per_class(tmp_path):
    make_folder(str(tmp_path / "images"), counts=FOLDER_COUNTS, corrupt=False)
    data = DataConfig(name="image_folder", path=str(tmp_path / "images"), val_fraction=0.25,
                      test_fraction=0.25, image_size=16)
    result = train_model(data, TINY, TrainConfig(epochs=1, batch_size=16, class_weights="balanced"))
    counts, names = _class_counts(result)
    assert names == ["ant", "bee", "cat"]
    train = counts["train"]
    n, k = sum(train), len(train)
    assert train[0] > train[1] > train[2]  # the imbalance survives the stratified split
    assert result.data_report["class_weights"] == [pytest.approx(n / (k * c)) for c in train]


# --- through a worker and the CLI ------------------------------------------------------------


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))




@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    digits = run_cli_study(root, "digits", spec_text("digits", n_trials=2, epochs=2))
    make_folder(str(root / "images"), counts=FOLDER_COUNTS, corrupt=False)
    folder = (spec_text("folder", n_trials=1, epochs=1, search={})
              .replace("data: {name: digits, val_fraction: 0.2, test_fraction: 0.2, split_seed: 0}",
                       f"data: {{name: image_folder, path: {root / 'images'}, val_fraction: 0.25, "
                       "test_fraction: 0.25, image_size: 16}")
              .replace("batch_size: 128,", "batch_size: 16, class_weights: balanced,"))
    return {"digits": digits, "folder": run_cli_study(root, "folder", folder)}


def _records(journal: str, name: str):
    return trial_records(load_study(name, resolve_storage(journal)).study.get_trials())


def test_worker_records_train_accuracy_with_the_curves(studies):
    for trial in _records(studies["digits"], "digits"):
        accuracy = trial.curve("train_accuracy")
        assert len(accuracy) == trial.epochs_trained == 2
        assert all(0.0 <= a <= 1.0 for a in accuracy)


def test_worker_records_class_counts_by_name_and_the_weights_applied(studies):
    [trial] = _records(studies["folder"], "folder")
    counts = trial.class_counts()
    assert list(counts) == ["train", "val"]
    assert {split: list(c) for split, c in counts.items()} == {"train": ["ant", "bee", "cat"],
                                                              "val": ["ant", "bee", "cat"]}
    splits = load_splits(DataConfig(**trial.config["data"]))
    assert (sum(counts["train"].values()), sum(counts["val"].values())) == (len(splits.train), len(splits.val))
    train = counts["train"]
    n = sum(train.values())
    assert trial.class_weights() == {c: pytest.approx(n / (3 * m)) for c, m in train.items()}
    [digits] = _records(studies["digits"], "digits")[:1]
    assert digits.class_weights() is None


def test_study_show_trial_prints_counts_weights_and_accuracies(studies):
    [trial] = _records(studies["folder"], "folder")
    result = _invoke("study", "show", "folder", "--storage", studies["folder"], "--trial", str(trial.number))
    assert result.exit_code == 0, result.output
    out = result.output
    train = trial.class_counts()["train"]
    assert "Class counts" in out
    assert all(name in out for name in train)
    assert " ".join(f"{name} {count}" for name, count in train.items()) in " ".join(out.split())
    weights = trial.class_weights()
    assert "balanced" in out
    assert " ".join(f"{name} {w:.3f}" for name, w in weights.items()) in " ".join(out.split())
    assert f"{trial.curve('train_accuracy')[-1]:.4f}" in out
    shown = _invoke("study", "show", "digits", "--storage", studies["digits"], "--trial", "0")
    assert shown.exit_code == 0, shown.output
    assert "Class weights: none" in shown.output


def test_study_show_trial_json_and_an_unknown_trial(studies):
    import json

    result = _invoke("study", "show", "folder", "--storage", studies["folder"], "--trial", "0", "--format", "json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert set(shown["class_counts"]) == {"train", "val"}
    assert set(shown["class_weights"]) == {"ant", "bee", "cat"}
    assert len(shown["curves"]["train_accuracy"]) == 1
    missing = _invoke("study", "show", "folder", "--storage", studies["folder"], "--trial", "7")
    assert missing.exit_code != 0
    assert "Error: study 'folder' has no trial 7" in missing.output


def test_report_lists_class_counts_and_the_weights_applied(studies, tmp_path):
    from hpo.results.report import write_report

    [trial] = _records(studies["folder"], "folder")
    write_report(load_study("folder", resolve_storage(studies["folder"])), tmp_path / "folder")
    lines = (tmp_path / "folder" / "classes.md").read_text().splitlines()
    assert lines[0] == "| class | train | val | weight |" and lines[1] == "|---|---:|---:|---:|"
    counts, weights = trial.class_counts(), trial.class_weights()
    assert lines[2:] == [f"| {name} | {counts['train'][name]} | {counts['val'][name]} | {weights[name]:.3f} |"
                         for name in ("ant", "bee", "cat")]
    page = (tmp_path / "folder" / "report.md").read_text()
    assert "## Classes" in page and "train.class_weights balanced" in page
    write_report(load_study("digits", resolve_storage(studies["digits"])), tmp_path / "digits")
    assert "Class weights: none (train.class_weights none)" in (tmp_path / "digits" / "report.md").read_text()
    assert {line.split(" | ")[-1] for line in (tmp_path / "digits" / "classes.md").read_text().splitlines()[2:]} \
        == {"none |"}
