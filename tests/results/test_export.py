"""``hpo study export``: exact errors, and each format read back equal to the study."""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner

from hpo.cli.main import cli

SPEC = """\
name: tiny
objective: {metric: val_accuracy, direction: maximize}
budget: {n_trials: 4}
sampler: {name: random, seed: 0}
pruner: {name: none}
data: {name: digits}
model: {name: mlp, n_layers: 1, width: 8}
train: {epochs: 2}
search:
  train.lr: {low: 1e-3, high: 1e-1, log: true}
  model.width: {choices: [8, 12], repeat: model.n_layers}
"""


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """A finished 4-trial study plus one hand-back (``over_budget``) that export leaves out."""
    root = tmp_path_factory.mktemp("export")
    (root / "spec.yaml").write_text(SPEC)
    journal = str(root / "studies.journal")
    created = invoke("study", "create", str(root / "spec.yaml"), "--storage", journal,
                     "--artifacts", str(root / "artifacts"))
    assert created.exit_code == 0, created.output
    worked = invoke("worker", "tiny", "--rank", "0", "--storage", journal, "--quiet")
    assert worked.exit_code == 0, worked.output
    study = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal)))
    trial = study.ask()
    trial.set_user_attr("over_budget", True)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return journal


def _trials(journal: str):
    study = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal)))
    return [t for t in study.get_trials() if not t.user_attrs.get("over_budget")]


@pytest.mark.parametrize("name, shown", [("out.txt", "'.txt'"), ("out", "no suffix")])
def test_bad_suffix_is_refused_before_the_storage_is_opened(tmp_path, name, shown):
    result = invoke("study", "export", "tiny", "--output", str(tmp_path / name),
                    "--storage", str(tmp_path / "missing.journal"))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: cannot export to {tmp_path / name}: unknown format {shown} "
                             "(expected .csv, .json or .parquet)\n")
    assert not (tmp_path / "missing.journal").exists()


def test_unknown_study(storage, tmp_path):
    result = invoke("study", "export", "nope", "--output", str(tmp_path / "x.csv"), "--storage", storage)
    assert result.exit_code == 2
    assert result.stderr == f"Error: no study named 'nope' in {storage} (studies: tiny)\n"
    assert not (tmp_path / "x.csv").exists()


def _read(path):
    if path.suffix == ".csv":
        frame = pd.read_csv(path)
        frame["curves.val_accuracy"] = frame["curves.val_accuracy"].map(json.loads)
        return frame
    if path.suffix == ".json":
        return pd.DataFrame(json.loads(path.read_text()))
    return pd.read_parquet(path)


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_export_round_trips(storage, tmp_path, suffix):
    out = tmp_path / f"trials{suffix}"
    result = invoke("study", "export", "tiny", "--output", str(out), "--storage", storage)
    assert result.exit_code == 0, result.output
    trials = _trials(storage)
    assert result.stdout == f"Exported {len(trials)} trials to {out}\n"
    frame = _read(out)
    assert len(frame) == len(trials) == 4
    expected = ["number", "state", "value", "datetime_start", "datetime_complete", "duration_s",
                "param_model.width[0]", "param_train.lr", "params_total", "params_trainable",
                "peak_memory_mb", "seconds_per_epoch", "images_per_second", "epochs_trained",
                "seed", "device", "config.train.lr", "config.model.width", "curves.val_accuracy",
                "curves.val_loss", "curves.seconds"]
    assert [c for c in expected if c not in frame.columns] == []
    assert "over_budget" not in frame.columns
    rows = frame.set_index("number")
    for trial in trials:
        row = rows.loc[trial.number]
        assert row["state"] == "complete"
        assert math.isclose(row["value"], trial.value)
        assert math.isclose(row["param_train.lr"], trial.params["train.lr"])
        assert row["param_model.width[0]"] == trial.params["model.width[0]"]
        assert math.isclose(row["config.train.lr"], trial.params["train.lr"])
        for key in ("params_total", "params_trainable", "epochs_trained", "seed"):
            assert row[key] == trial.user_attrs[key], key
        assert row["device"] == "cpu"
        assert math.isclose(row["duration_s"], trial.duration.total_seconds(), rel_tol=1e-6)
        assert list(row["curves.val_accuracy"]) == pytest.approx(trial.user_attrs["curves"]["val_accuracy"])
        assert pd.Timestamp(row["datetime_start"]).to_pydatetime().replace(tzinfo=None) == trial.datetime_start
