"""``hpo study export``: exact errors, and each format read back equal to the study, with
Optuna's column names (``params_<name>``), integer columns that stay integers where a
repeated parameter is absent, and the skipped image files as one list."""

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
budget: {n_trials: 5}
sampler: {name: random, seed: 1}
pruner: {name: none}
data: {name: digits}
model: {name: mlp, n_layers: 1, width: 8}
train: {epochs: 2}
search:
  train.lr: {low: 1e-3, high: 1e-1, log: true}
  model.n_layers: {low: 1, high: 2}
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
    assert len(frame) == len(trials) == 5
    expected = ["number", "state", "value", "datetime_start", "datetime_complete", "duration_s",
                "params_model.n_layers", "params_model.width[0]", "params_model.width[1]",
                "params_train.lr", "total_params", "trainable_params",
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
        assert math.isclose(row["params_train.lr"], trial.params["train.lr"])
        assert row["params_model.width[0]"] == trial.params["model.width[0]"]
        if "model.width[1]" in trial.params:
            assert row["params_model.width[1]"] == trial.params["model.width[1]"]
        else:
            assert pd.isna(row["params_model.width[1]"])
        assert math.isclose(row["config.train.lr"], trial.params["train.lr"])
        assert row["total_params"] == trial.user_attrs["params_total"]
        assert row["trainable_params"] == trial.user_attrs["params_trainable"]
        for key in ("epochs_trained", "seed"):
            assert row[key] == trial.user_attrs[key], key
        assert row["device"] == "cpu"
        assert math.isclose(row["duration_s"], trial.duration.total_seconds(), rel_tol=1e-6)
        assert list(row["curves.val_accuracy"]) == pytest.approx(trial.user_attrs["curves"]["val_accuracy"])
        assert pd.Timestamp(row["datetime_start"]).to_pydatetime().replace(tzinfo=None) == trial.datetime_start


def _frame(storage, name="tiny"):
    import hpo

    return hpo.load_results(name, storage=storage).dataframe()


def test_hyperparameters_are_named_as_optuna_names_them(storage):
    """``df.filter(like="params_")`` picks exactly the hyperparameters, under the names of
    Optuna's own ``trials_dataframe()``; the parameter counts are not among them."""
    frame = _frame(storage)
    study = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)))
    optunas = study.trials_dataframe()
    hyper = sorted(c for c in optunas.columns if c.startswith("params_"))
    assert sorted(frame.filter(like="params_").columns) == hyper
    assert hyper == ["params_model.n_layers", "params_model.width[0]", "params_model.width[1]",
                     "params_train.lr"]
    assert {"total_params", "trainable_params"} <= set(frame.columns)
    assert not {"params_total", "params_trainable"} & set(frame.columns)


def test_integer_columns_stay_integers_where_a_repeated_parameter_is_absent(storage):
    frame = _frame(storage)
    second = frame["params_model.width[1]"]
    assert second.isna().any() and second.notna().any()  # both depths were sampled
    assert second.dtype == "Int64"
    assert set(second.dropna()) <= {8, 12}
    for column in ("number", "params_model.n_layers", "params_model.width[0]", "total_params",
                   "trainable_params", "epochs_trained", "seed"):
        assert pd.api.types.is_integer_dtype(frame[column]), (column, frame[column].dtype)
    assert frame["params_train.lr"].dtype == "float64"


def _dtype_kind(series) -> str:
    types = pd.api.types
    for kind, check in (("bool", types.is_bool_dtype), ("int", types.is_integer_dtype),
                        ("float", types.is_float_dtype)):
        if check(series):
            return kind
    return "other"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_dtypes_round_trip(storage, tmp_path, suffix):
    """Parquet keeps every dtype; CSV read with pandas' nullable dtypes (as docs/results.md
    says) keeps integers integers, absent values included."""
    out = tmp_path / f"trials{suffix}"
    assert invoke("study", "export", "tiny", "--output", str(out), "--storage", storage).exit_code == 0
    frame = _frame(storage)
    back = (pd.read_csv(out, dtype_backend="numpy_nullable") if suffix == ".csv"
            else pd.read_parquet(out))
    assert list(back.columns) == list(frame.columns)
    numeric = [c for c in frame.columns if _dtype_kind(frame[c]) != "other"]
    assert "params_model.width[1]" in numeric and "total_params" in numeric
    assert {c: _dtype_kind(back[c]) for c in numeric} == {c: _dtype_kind(frame[c]) for c in numeric}
    if suffix == ".parquet":
        assert dict(back.dtypes) == dict(frame.dtypes)
    assert back["params_model.width[1]"].isna().tolist() == frame["params_model.width[1]"].isna().tolist()
    assert back["params_model.width[1]"].dropna().tolist() == frame["params_model.width[1]"].dropna().tolist()


@pytest.fixture(scope="module")
def folder_storage(tmp_path_factory):
    """A one-trial image-folder study whose folder has three unreadable images."""
    from tests.training.test_data_folder import make_folder

    root = tmp_path_factory.mktemp("folder-export")
    bad = make_folder(str(root / "images"), counts={"ant": 6, "bee": 6, "cat": 6})
    spec = SPEC.replace("name: tiny", "name: folder").replace("n_trials: 5", "n_trials: 1").replace(
        "data: {name: digits}", f"data: {{name: image_folder, path: '{root / 'images'}', image_size: 8}}")
    (root / "spec.yaml").write_text(spec.replace("train: {epochs: 2}", "train: {epochs: 1}"))
    journal = str(root / "studies.journal")
    assert invoke("study", "create", str(root / "spec.yaml"), "--storage", journal).exit_code == 0
    worked = invoke("worker", "folder", "--storage", journal, "--quiet")
    assert worked.exit_code == 0, worked.output
    return journal, bad


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_skipped_files_are_one_column_holding_the_list(folder_storage, tmp_path, suffix):
    journal, bad = folder_storage
    frame = _frame(journal, "folder")
    assert not [c for c in frame.columns if any(path in c for path in bad)]
    assert sorted(frame.loc[0, "data.skipped_files"]) == sorted(bad)
    out = tmp_path / f"trials{suffix}"
    assert invoke("study", "export", "folder", "--output", str(out), "--storage", journal).exit_code == 0
    back = _read(out) if suffix != ".csv" else pd.read_csv(out)
    cell = back.loc[0, "data.skipped_files"]
    assert sorted(json.loads(cell) if suffix == ".csv" else list(cell)) == sorted(bad)
