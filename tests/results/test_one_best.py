"""One truth for "best": the dashboard, ``hpo study best/show``, the report, retrain and the
Python API name the same trial of a study with tied best values; metric names on every study;
the report's importances are the dashboard's (PED-ANOVA), with their caveats."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from tests.specs import spec_text

# On digits with a 1x16 MLP and one epoch, these learning rates give the same validation
# accuracy, and the second a lower validation loss: hpo's former tie-breaker (the loss) named
# trial 1, Optuna (and so the dashboard) trial 0.
TIED_LRS = ("0.001", "0.00101")


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def make_study(root: Path, name: str, text: str) -> str:
    journal = str(root / "studies.journal")
    (root / f"{name}.yaml").write_text(text)
    for args in (["study", "create", str(root / f"{name}.yaml")], ["worker", name, "--rank", "0", "--quiet"]):
        result = invoke(*args, "--storage", journal)
        assert result.exit_code == 0, result.output
    return journal


def enqueued(text: str, sets: list[str]) -> str:
    return text + "enqueue:\n" + "".join(f"  - {s}\n" for s in sets)


def load(journal: str, name: str) -> Any:
    from hpo.storage.urls import resolve_storage
    from hpo.study.studies import load_study

    return load_study(name, resolve_storage(journal))


def dashboard_get(journal: str, path: str) -> Any:
    """GET ``path`` from hpo's dashboard app in-process; the parsed JSON answer."""
    from hpo.results.dashboard import create_app
    from hpo.storage.urls import resolve_storage

    app = create_app(resolve_storage(journal))
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(b"")
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"] = status

    body = b"".join(app(environ, start_response))
    assert seen["status"].startswith("200"), (seen["status"], body)
    return json.loads(body)


@pytest.fixture(scope="module")
def tied(tmp_path_factory: pytest.TempPathFactory) -> str:
    text = spec_text("tie", n_trials=2, search={"train.lr": f"{{choices: [{', '.join(TIED_LRS)}]}}"})
    return make_study(tmp_path_factory.mktemp("tie"), "tie", enqueued(text, [f"{{train.lr: {lr}}}" for lr in TIED_LRS]))


def test_a_tie_names_the_same_trial_everywhere(tied, tmp_path):
    from hpo.api import load_results
    from hpo.results.retrain import choose_trial

    loaded = load(tied, "tie")
    first, second = loaded.study.get_trials(deepcopy=False)
    # The set-up this test is about: equal values, the later trial with the lower loss.
    assert first.value == second.value
    assert second.user_attrs["curves"]["val_loss"][-1] < first.user_attrs["curves"]["val_loss"][-1]

    detail = dashboard_get(tied, f"/api/studies/{loaded.study._study_id}")
    dashboard_best = [t["number"] for t in detail["best_trials"]]
    assert dashboard_best == [loaded.study.best_trial.number] == [first.number]

    value = f"{first.value:.4g}"
    shown = invoke("study", "best", "tie", "--storage", tied)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[:4] == [
        f"Best trial {first.number} of tie: val_accuracy = {value}",
        f"Tied: trial {second.number} has the same val_accuracy; Optuna and its dashboard name the "
        "first of equal values, and so does hpo",
        "Params:",
        "  train.lr: 0.001",
    ]
    best = json.loads(invoke("study", "best", "tie", "--storage", tied, "--format", "json").stdout)
    assert (best["number"], best["tied"]) == (first.number, [second.number])

    summary = json.loads(invoke("study", "show", "tie", "--storage", tied, "--format", "json").stdout)
    assert (summary["best"]["number"], summary["best"]["tied"]) == (first.number, [second.number])
    assert [row["number"] for row in summary["top"]] == [first.number, second.number]
    table = invoke("study", "show", "tie", "--storage", tied).stdout
    assert f"Best: {value} (trial {first.number}; tied: trial {second.number})\n" in table

    out = tmp_path / "report"
    assert invoke("study", "report", "tie", "--storage", tied, "--output", str(out)).exit_code == 0
    markdown = (out / "report.md").read_text()
    assert (f"Best: trial {first.number}, val_accuracy = {value} (tied with trial {second.number}: "
            "the first of equal values, as Optuna and the dashboard name it).") in markdown
    comparison = markdown.split("## Model comparison")[1].split("\n## ")[0]  # not the Classes table after it
    assert [int(n) for n in re.findall(r"^\| (\d+) \|", comparison, re.M)] == [first.number, second.number]

    assert choose_trial(loaded, None).number == first.number  # what hpo retrain trains
    assert load_results("tie", tied).best.number == first.number


def test_metric_names_are_set_when_a_study_is_created(tmp_path):
    journal = str(tmp_path / "studies.journal")
    single = spec_text("one")
    multi = spec_text("two").replace(
        "objective: {metric: val_accuracy, direction: maximize}",
        "objective: [{metric: val_accuracy, direction: maximize}, {metric: params, direction: minimize}]")
    for name, text in (("one", single), ("two", multi)):
        (tmp_path / f"{name}.yaml").write_text(text)
        result = invoke("study", "create", str(tmp_path / f"{name}.yaml"), "--storage", journal)
        assert result.exit_code == 0, result.output
    assert load(journal, "one").study.metric_names == ["val_accuracy"]
    two = load(journal, "two").study
    assert two.metric_names == ["val_accuracy", "params"]
    # What the dashboard labels its axes with.
    assert dashboard_get(journal, f"/api/studies/{two._study_id}")["objective_names"] == ["val_accuracy", "params"]


@pytest.mark.parametrize("opened_by", ["reuse", "worker"])
def test_a_study_from_before_metric_names_gets_them_when_opened(tmp_path, opened_by):
    from hpo.api import load_spec
    from hpo.spec import spec_sha256, spec_to_json
    from hpo.storage.urls import open_storage, resolve_storage
    from hpo.study.attrs import SPEC, SPEC_SHA256

    journal = str(tmp_path / "studies.journal")
    path = tmp_path / "old.yaml"
    path.write_text(spec_text("old"))
    # The study as hpo created it before it set metric names: the spec and its sha256.
    data = spec_to_json(load_spec(path))
    old = optuna.create_study(study_name="old", storage=open_storage(resolve_storage(journal)),
                              direction="maximize")
    old.set_user_attr(SPEC, data)
    old.set_user_attr(SPEC_SHA256, spec_sha256(data))
    assert old.metric_names is None
    if opened_by == "reuse":
        result = invoke("study", "create", str(path), "--storage", journal, "--if-exists", "reuse")
        assert result.stdout.startswith("Reusing study 'old'")
    else:
        result = invoke("worker", "old", "--storage", journal, "--rank", "0", "--quiet")
    assert result.exit_code == 0, result.output
    assert load(journal, "old").study.metric_names == ["val_accuracy"]


# Conditional parameters: train.momentum only with sgd (2 trials), model.width[1] only with
# two layers (1 trial, so PED-ANOVA cannot assess it). Five complete trials: below ten.
CONDITIONAL_SETS = [
    "{train.optimizer: adam, train.lr: 0.01, model.n_layers: 1, model.width: [8]}",
    "{train.optimizer: sgd, train.lr: 0.05, train.momentum: 0.9, model.n_layers: 1, model.width: [16]}",
    "{train.optimizer: sgd, train.lr: 0.02, train.momentum: 0.85, model.n_layers: 1, model.width: [8]}",
    "{train.optimizer: adam, train.lr: 0.003, model.n_layers: 2, model.width: [16, 8]}",
    "{train.optimizer: adam, train.lr: 0.03, model.n_layers: 1, model.width: [16]}",
]


@pytest.fixture(scope="module")
def conditional(tmp_path_factory: pytest.TempPathFactory) -> str:
    text = spec_text("cond", n_trials=len(CONDITIONAL_SETS), search={
        "train.lr": "{low: 1.0e-3, high: 1.0e-1, log: true}",
        "train.optimizer": "{choices: [adam, sgd]}",
        "train.momentum": "{low: 0.8, high: 0.99, when: {train.optimizer: sgd}}",
        "model.n_layers": "{choices: [1, 2]}",
        "model.width": "{choices: [8, 16], repeat: model.n_layers}",
    })
    return make_study(tmp_path_factory.mktemp("cond"), "cond", enqueued(text, CONDITIONAL_SETS))


# The dashboard warns (as Optuna does) about model.width[1]: the report says it in words.
@pytest.mark.filterwarnings("ignore:Some regimes for parameter:UserWarning")
def test_the_report_names_the_importance_method_warns_and_lists_left_out_parameters(
        conditional, tmp_path, monkeypatch):
    import hpo.results.report as report

    titles: dict[str, list[str]] = {}
    save = report._Context.save

    def keep_titles(self: Any, figure: Any, name: str, section: Any, alt: str) -> None:
        titles[name] = [title for ax in figure.axes for loc in ("left", "center", "right")
                        if (title := ax.get_title(loc))]
        save(self, figure, name, section, alt)

    monkeypatch.setattr(report._Context, "save", keep_titles)
    out = tmp_path / "report"
    result = invoke("study", "report", "cond", "--storage", conditional, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert titles["importances.png"] == ["Hyperparameter importances (PED-ANOVA): val_accuracy"]
    section = (out / "report.md").read_text().split("## Hyperparameter importances")[1].split("\n## ")[0]
    assert "PED-ANOVA" in section and "the method optuna-dashboard uses" in section
    assert ("*Note: only 5 complete trials: below 10, PED-ANOVA's top 10 % of trials is a single "
            "trial, so these importances are a hint, not a finding*") in section
    assert ("*Note: left out (importance 0, not assessed): model.width[1] (set in 1 of 5 complete "
            "trials; PED-ANOVA needs 2 where it is set)*") in section
    assert ("Conditional parameters, assessed over the trials that set them (Optuna's conditional "
            "PED-ANOVA): train.momentum (2 of 5).") in section
    assert "left out (importance 0" in result.stderr  # the notes are also printed

    # The same numbers as the dashboard's importance panel.
    study = load(conditional, "cond").study
    panel = dashboard_get(conditional, f"/api/studies/{study._study_id}/param_importances")
    dashboard = {p["name"]: f"{p['importance']:.3f}" for p in panel["param_importances"][0]}
    rows = re.findall(r"^\| (\S+) \| (\d\.\d{3}) \|$", section, re.M)
    assert dict(rows) == dashboard
    assert set(dashboard) == {"train.lr", "train.optimizer", "train.momentum", "model.n_layers",
                              "model.width[0]", "model.width[1]"}
