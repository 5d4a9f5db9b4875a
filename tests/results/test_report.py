"""``hpo study report``: every figure the page names exists and is a PNG; the table ranks."""

from __future__ import annotations

import re

import optuna
import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.study.attrs import GRAD_NORMS
from tests.specs import spec_text

PNG = b"\x89PNG\r\n\x1a\n"
# lr 1e-7 learns nothing, lr 0.5 learns: with the median pruner after 1 trial, the weak ones
# are pruned at epoch 1 (seed 3 gives 5 complete and 1 pruned trials).
PRUNED_SPEC = """\
name: pruned
objective: {metric: val_accuracy, direction: maximize}
budget: {n_trials: 6}
sampler: {name: random, seed: 3}
pruner: {name: median, n_startup_trials: 1}
data: {name: digits}
model: {name: mlp, n_layers: 1, width: 8}
train: {epochs: 2, optimizer: sgd, momentum: 0.0}
search:
  train.lr: {choices: [0.5, 1e-7]}
  model.width: {choices: [8, 12], repeat: model.n_layers}
  train.batch_size: {choices: [32, 64]}
"""
SINGLE_SPEC = PRUNED_SPEC.replace("name: pruned", "name: single").replace("n_trials: 6", "n_trials: 1")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    journal = str(root / "studies.journal")
    for name, text in (("pruned", PRUNED_SPEC), ("single", SINGLE_SPEC)):
        (root / f"{name}.yaml").write_text(text)
        created = invoke("study", "create", str(root / f"{name}.yaml"), "--storage", journal,
                         "--artifacts", str(root / "artifacts"))
        assert created.exit_code == 0, created.output
        worked = invoke("worker", name, "--rank", "0", "--storage", journal, "--quiet")
        assert worked.exit_code == 0, worked.output
    return journal


def _study(journal: str, name: str):
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal)))


def _images(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_report_writes_every_figure_it_lists(storage, tmp_path):
    study = _study(storage, "pruned")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1 and states.count(optuna.trial.TrialState.COMPLETE) >= 3
    out = tmp_path / "report"
    result = invoke("study", "report", "pruned", "--output", str(out), "--storage", storage, "--top", "3")
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    images = _images(markdown)
    assert result.stdout == f"Wrote {out / 'report.md'} and {out / 'report.html'} ({len(images)} figures)\n"
    assert {"history.png", "importances.png", "parallel_coordinates.png", "learning_curves.png",
            "tradeoffs.png"} <= set(images)
    assert "gradient_norms.png" not in images  # no trial recorded them (train.record_gradients)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(images)
    for name in images:
        assert (out / name).read_bytes()[:8] == PNG, name
    page = (out / "report.html").read_text()
    assert all(f'<img src="{name}"' in page for name in images)

    table = markdown.split("## Model comparison")[1].split("\n## ")[0]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()
             if line.startswith("|")]
    col = {h: i for i, h in enumerate(cells[0])}
    rows = cells[2:]  # after the header and the alignment row
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best_values = sorted((t.value for t in complete), reverse=True)[:3]
    assert len(rows) == 3
    by_number = {t.number: t for t in complete}
    for row, value in zip(rows, best_values):
        trial = by_number[int(row[col["trial"]])]
        assert row[col["validation accuracy"]] == f"{trial.value:.4f}" == f"{value:.4f}"
        assert row[col["parameters"]] == f"{trial.user_attrs['params_total']:,}"
        assert row[col["epochs trained"]] == str(trial.user_attrs["epochs_trained"])


def test_one_complete_trial_still_gives_a_report_with_the_importance_note(storage, tmp_path):
    out = tmp_path / "single"
    result = invoke("study", "report", "single", "--output", str(out), "--storage", storage)
    assert result.exit_code == 0, result.output
    note = "cannot compute: parameter importances need at least 2 complete trials (the study has 1)"
    assert result.stderr == f"Note: {note}\n"
    markdown = (out / "report.md").read_text()
    assert f"*Note: {note}*" in markdown
    images = _images(markdown)
    assert "importances.png" not in images and "history.png" in images
    for name in images:
        assert (out / name).read_bytes()[:8] == PNG, name
    number = _study(storage, "single").trials[0].number
    assert re.search(rf"^\| {number} \| ", markdown, re.M)


def test_unknown_study(storage, tmp_path):
    result = invoke("study", "report", "nope", "--output", str(tmp_path / "r"), "--storage", storage)
    assert result.exit_code == 2
    assert result.stderr == f"Error: no study named 'nope' in {storage} (studies: pruned, single)\n"
    assert not (tmp_path / "r").exists()


# The vanishing-gradient set-up (8 units x 6 sigmoid layers, U(-0.05, 0.05)) on the tiny spec
# of tests/specs.py, recording gradient norms for 3 epochs.
GRADIENT_SPEC = spec_text("vanishing", n_trials=2, epochs=3).replace(
    "model: {name: mlp, n_layers: 1, width: 16, activation: relu}",
    "model: {name: mlp, n_layers: 6, width: 8, activation: sigmoid, init: uniform, init_range: 0.05}",
).replace("seed: 0}\nsearch", "seed: 0, record_gradients: true}\nsearch")


@pytest.fixture(scope="module")
def gradient_storage(tmp_path_factory):
    assert "record_gradients: true" in GRADIENT_SPEC and "init: uniform" in GRADIENT_SPEC
    root = tmp_path_factory.mktemp("gradients")
    journal = str(root / "studies.journal")
    (root / "vanishing.yaml").write_text(GRADIENT_SPEC)
    created = invoke("study", "create", str(root / "vanishing.yaml"), "--storage", journal,
                     "--artifacts", str(root / "artifacts"))
    assert created.exit_code == 0, created.output
    worked = invoke("worker", "vanishing", "--rank", "0", "--storage", journal, "--quiet")
    assert worked.exit_code == 0, worked.output
    return journal


def test_recorded_gradient_norms_are_stored_per_layer_and_epoch(gradient_storage):
    from hpo import load_results

    trials = load_results("vanishing", gradient_storage).trials
    assert [t.state_name for t in trials] == ["complete", "complete"]
    for trial in trials:
        assert trial.grad_norms is not None
        assert trial.grad_norms.layers == ["1", "3", "5", "7", "9", "11", "13"]  # the Sequential's Linears
        assert len(trial.grad_norms.norms) == len(trial.curve("val_loss")) == 3
        assert all(v is not None and v > 0 for row in trial.grad_norms.norms for v in row)
        per_layer = trial.grad_norms.per_layer()
        assert per_layer["1"][0] < per_layer["13"][0]  # vanishing towards the input
        assert trial.user_attrs[GRAD_NORMS]["layers"] == trial.grad_norms.layers


def test_report_draws_the_best_trials_gradient_norms(gradient_storage, tmp_path):
    from hpo import load_results

    out = tmp_path / "report"
    result = invoke("study", "report", "vanishing", "--output", str(out), "--storage", gradient_storage)
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    assert "gradient_norms.png" in _images(markdown)
    assert (out / "gradient_norms.png").read_bytes()[:8] == PNG
    assert '<img src="gradient_norms.png"' in (out / "report.html").read_text()
    section = markdown.split("## Gradient norms")[1].split("\n## ")[0]
    best = load_results("vanishing", gradient_storage).best.number
    assert f"Trial {best}: the L2 norm of each Linear/Conv layer's weight gradient" in section
    # After the learning curves, before the trade-offs.
    assert markdown.index("## Learning curves") < markdown.index("## Gradient norms") \
        < markdown.index("## Accuracy against size")
