"""The report's tables on real studies: readable headers, one column per hyperparameter (a
repeated one as 32/64), model, parameter counts with thousands separators, fixed decimals,
right-aligned numbers in Markdown, n/a for peak memory on CPU, raw numbers in the CSV, the
retrained test accuracy ± std, and a grid study's table of grid points."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.results.report import write_report
from hpo.results.tables import comparison_table
from hpo.storage.urls import resolve_storage
from hpo.study.attrs import StudyRecord, trial_records
from hpo.study.studies import load_study
from tests.specs import run_cli_study, spec_text

SEARCH = {
    "train.lr": "{low: 1.0e-3, high: 0.5, log: true}",
    "model.n_layers": "{choices: [1, 2]}",
    "model.width": "{choices: [64, 128], repeat: model.n_layers}",  # >= 1,000 parameters
}
GRID = {
    "train.batch_size": "{choices: [32, 128]}",
    "train.lr": "{choices: [0.003, 0.3]}",
    "train.epochs": "{choices: [1, 2]}",
}
RENDERED = Path(__file__).parent / "rendered"
COUNT = re.compile(r"^\d{1,3}(,\d{3})*$")


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))




@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    search = run_cli_study(root, "search", spec_text("search", n_trials=6, epochs=1, search=SEARCH))
    best = load_study("search", resolve_storage(search)).study.best_trial.number
    retrained = _invoke("retrain", "search", "--trial", str(best), "--seeds", "2", "--test",
                        "--output", str(root / "retrain"), "--storage", search)
    assert retrained.exit_code == 0, retrained.output
    grid = run_cli_study(root, "grid", spec_text("grid", n_trials=8, sampler="grid", search=GRID))
    out = {}
    RENDERED.mkdir(exist_ok=True)
    for name, journal in (("search", search), ("grid", grid)):
        result = write_report(load_study(name, resolve_storage(journal)), root / f"report-{name}", top=10)
        out[name] = (journal, root / f"report-{name}")
        for table in result.tables:  # a sample of each, beside the figures' (not committed)
            shutil.copyfile(table, RENDERED / f"{name}_{table.name}")
    return out


def _records(journal: str, name: str):
    return {t.number: t for t in trial_records(load_study(name, resolve_storage(journal)).study.get_trials())}


def _markdown(path: Path) -> tuple[list[str], list[str], list[list[str]]]:
    lines = path.read_text().splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    return cells[0], cells[1], cells[2:]


def test_comparison_headers_are_readable_one_column_per_hyperparameter(reports):
    header, rule, rows = _markdown(reports["search"][1] / "comparison.md")
    assert header[:5] == ["trial", "model", "lr", "layers", "width"]
    assert {"parameters", "trainable", "s/epoch", "images/s", "epochs trained", "peak GPU memory (MB)",
            "validation accuracy", "test accuracy"} <= set(header)
    assert not {"params_total", "peak_memory_mb", "params"} & set(header)  # no raw keys, no one-cell params
    assert rule == ["---" if h == "model" else "---:" for h in header]  # numbers right-aligned
    assert {row[1] for row in rows} == {"mlp"}


def test_comparison_cells_have_separators_fixed_decimals_and_na_on_cpu(reports):
    journal, out = reports["search"]
    records = _records(journal, "search")
    header, _, rows = _markdown(out / "comparison.md")
    col = {h: i for i, h in enumerate(header)}
    for row in rows:
        trial = records[int(row[col["trial"]])]
        assert COUNT.match(row[col["parameters"]]) and row[col["parameters"]] == f"{trial.params_total:,}"
        assert trial.params_total >= 1000 and "," in row[col["parameters"]]
        assert row[col["trainable"]] == f"{trial.params_trainable:,}"
        assert re.fullmatch(r"\d+\.\d{4}", row[col["validation accuracy"]])
        assert row[col["validation accuracy"]] == f"{trial.value:.4f}"
        assert re.fullmatch(r"\d+\.\d{2,4}", row[col["s/epoch"]])
        assert re.fullmatch(r"[\d,]+", row[col["images/s"]])
        assert row[col["peak GPU memory (MB)"]] == "n/a"  # trained on CPU
        assert float(row[col["lr"]]) == pytest.approx(trial.params["train.lr"], rel=0.01)
        widths = [trial.params[f"model.width[{i}]"] for i in range(trial.params["model.n_layers"])]
        assert row[col["width"]] == "/".join(map(str, widths))  # a repeated parameter: one column


def test_columns_keep_one_number_of_decimals_each(reports):
    _, out = reports["search"]
    header, _, rows = _markdown(out / "comparison.md")
    for name in ("s/epoch", "validation accuracy", "lr"):
        cells = [row[header.index(name)] for row in rows]
        assert len({len(c.split(".")[1]) for c in cells}) == 1, (name, cells)  # the points line up


def test_comparison_reports_the_retrained_test_accuracy_with_its_std(reports):
    journal, out = reports["search"]
    study = load_study("search", resolve_storage(journal)).study
    [(number, retrain)] = StudyRecord.from_attrs(study.user_attrs).retrains.items()
    accuracy = retrain["test"]["accuracy"]
    header, _, rows = _markdown(out / "comparison.md")
    col = {h: i for i, h in enumerate(header)}
    cells = {int(r[col["trial"]]): r[col["test accuracy"]] for r in rows}
    assert cells[number] == f"{accuracy['mean']:.4f} ± {accuracy['std']:.4f}"
    assert {c for n, c in cells.items() if n != number} == {"-"}
    frame = pd.read_csv(out / "comparison.csv")
    row = frame[frame["trial"] == number].iloc[0]
    assert (row["test accuracy"], row["test accuracy std"]) == (accuracy["mean"], accuracy["std"])
    assert frame.loc[frame["trial"] != number, "test accuracy"].isna().all()


def test_comparison_csv_holds_raw_numbers(reports):
    journal, out = reports["search"]
    records = _records(journal, "search")
    frame = pd.read_csv(out / "comparison.csv")
    assert pd.api.types.is_integer_dtype(frame["parameters"])
    assert pd.api.types.is_float_dtype(frame["lr"])
    for _, row in frame.iterrows():
        trial = records[int(row["trial"])]
        assert row["parameters"] == trial.params_total and row["trainable"] == trial.params_trainable
        assert row["s/epoch"] == trial.seconds_per_epoch and row["images/s"] == trial.images_per_second
        assert row["lr"] == trial.params["train.lr"]
        assert row["validation accuracy"] == trial.value
    assert frame["peak GPU memory (MB)"].isna().all()  # CPU: no GPU memory, not the process's RSS


def test_report_page_table_is_the_same_table(reports):
    _, out = reports["search"]
    page = (out / "report.md").read_text()
    assert (out / "comparison.md").read_text().strip() in page
    html = (out / "report.html").read_text()
    assert 'style="text-align:right"' in html


def test_gpu_trials_show_peak_memory_with_one_decimal(reports):
    journal, _ = reports["search"]
    trials = [dataclasses.replace(t, device="cuda:0", peak_memory_mb=1234.56)
              for t in _records(journal, "search").values() if t.value is not None]
    table = comparison_table(trials, ["val_accuracy"], {})
    col = table.header.index("peak GPU memory (MB)")
    assert {row[col] for row in table.formatted()} == {"1,234.6"}
    assert {row[col] for row in table.raw()} == {1234.56}


def test_grid_study_gets_a_table_of_grid_points_sorted_by_the_grid_keys(reports):
    journal, out = reports["grid"]
    header, rule, rows = _markdown(out / "grid_table.md")
    assert header[:3] == ["batch size", "lr", "epochs"]
    assert all(r == "---:" for r in rule)
    points = [(int(r[0]), float(r[1]), int(r[2])) for r in rows]
    assert points == sorted(points) and len(set(points)) == len(points) == 8  # 2 x 2 x 2
    records = _records(journal, "grid")
    frame = pd.read_csv(out / "grid_table.csv")
    for _, row in frame.iterrows():
        trial = records[int(row["trial"])]
        assert (row["batch size"], row["lr"], row["epochs"]) == (
            trial.params["train.batch_size"], trial.params["train.lr"], trial.params["train.epochs"])
        assert row["validation accuracy"] == trial.value
    assert "## Grid table" in (out / "report.md").read_text()


def test_class_table_adds_the_test_split_a_retrain_counted(reports):
    journal, out = reports["search"]
    study = load_study("search", resolve_storage(journal)).study
    [(number, retrain)] = StudyRecord.from_attrs(study.user_attrs).retrains.items()
    frame = pd.read_csv(out / "classes.csv")
    assert list(frame.columns) == ["class", "train", "val", "test", "weight"]
    assert frame["test"].sum() == retrain["test"]["images"] and list(frame["test"]) == retrain["test"]["class_counts"]
    assert list(frame["class"]) == list(range(10)) and frame["weight"].isna().all()  # unweighted


def test_study_show_lists_the_top_trials_with_the_reports_columns(reports):
    journal, _ = reports["search"]
    records = _records(journal, "search")
    result = CliRunner().invoke(cli, ["study", "show", "search", "--storage", journal, "--top", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if "trainable" in line)
    assert all(h in header for h in ("trial", "model", "lr", "layers", "width", "parameters", "s/epoch",
                                     "images/s", "peak GPU memory (MB)"))
    best = load_study("search", resolve_storage(journal)).study.best_trial.number
    row = next(line for line in lines if line.strip("│ ").startswith(f"{best} "))
    assert f"{records[best].params_total:,}" in row and "n/a" in row



def test_a_log_range_hyperparameter_is_scientific_a_measurement_stays_fixed():
    from hpo.results.tables import column_format

    lr = column_format([1e-4, 3e-3, 0.1], str, scientific=True)
    assert [lr(v) for v in (1e-4, 3e-3, 0.1)] == ["1.00e-04", "3.00e-03", "1.00e-01"]
    seconds = column_format([0.0058, 0.061, 12.5], str)
    assert [seconds(v) for v in (0.0058, 0.061, 12.5)] == ["0.0058", "0.0610", "12.5000"]
    assert [column_format([3.9, 20.6], str)(v) for v in (3.9, 20.6)] == ["3.90", "20.60"]


def _record(number: int, params: dict, value: float = 0.9):
    from optuna.trial import TrialState

    from hpo.study.attrs import TrialRecord

    return TrialRecord(number=number, state=TrialState.COMPLETE, values=[value], params=params,
                       datetime_start=None, datetime_complete=None, user_attrs={})


def test_scientific_notation_follows_the_searched_range_not_the_spread_of_values():
    from hpo.results.tables import column_format, comparison_table

    # A dropout searched on a linear range spans two decades: it stays fixed.
    assert [column_format([0.004, 0.45], str)(v) for v in (0.004, 0.45)] == ["0.0040", "0.4500"]
    # A log range whose sampled values happen to lie within one decade is scientific all the same.
    lr = column_format([0.002, 0.008], str, scientific=True)
    assert [lr(v) for v in (0.002, 0.008)] == ["2.00e-03", "8.00e-03"]
    rows = [_record(0, {"train.lr": 0.002, "model.dropout": 0.004}),
            _record(1, {"train.lr": 0.008, "model.dropout": 0.45})]
    table = comparison_table(rows, ["val_accuracy"], {}, log={"train.lr"})
    cells = {h: [row[i] for row in table.formatted()] for i, h in enumerate(table.header)}
    assert cells["lr"] == ["2.00e-03", "8.00e-03"] and cells["dropout"] == ["0.0040", "0.4500"]


def test_the_log_keys_are_the_specs_log_ranges(tmp_path):
    from hpo.results.tables import log_keys
    from hpo.spec import load_spec

    path = tmp_path / "s.yaml"
    path.write_text(spec_text("s", search={**SEARCH, "model.dropout": "{low: 0.0, high: 0.5}"}))
    assert log_keys(load_spec(path)) == {"train.lr"}


def test_a_retrain_with_one_seed_has_no_std(tmp_path):
    from hpo.results.retrain import _mean_std
    from hpo.results.tables import comparison_table

    assert _mean_std([0.95]) == {"mean": 0.95, "std": None, "values": [0.95]}
    assert _mean_std([0.9, 0.94])["std"] == pytest.approx(0.0283, abs=1e-4)
    one = {"test": {"accuracy": _mean_std([0.95])}}
    older = {"test": {"accuracy": {"mean": 0.95, "std": 0.0, "values": [0.95]}}}  # as stored before
    two = {"test": {"accuracy": _mean_std([0.9, 0.94])}}
    table = comparison_table([_record(0, {}), _record(1, {}), _record(2, {})], ["val_accuracy"],
                             {0: one, 1: older, 2: two})
    col = table.header.index("test accuracy")
    assert [row[col] for row in table.formatted()] == ["0.9500 (1 seed)", "0.9500 (1 seed)", "0.9200 ± 0.0283"]
    table.write(tmp_path, "comparison")
    frame = pd.read_csv(tmp_path / "comparison.csv")
    assert frame["test accuracy"].tolist() == pytest.approx([0.95, 0.95, 0.92])
    assert frame["test accuracy std"].isna().tolist() == [True, True, False]  # an empty cell, not 0.0
    assert (tmp_path / "comparison.csv").read_text().splitlines()[1].endswith(",0.95,")
