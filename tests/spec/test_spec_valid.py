"""Valid specs: the examples, defaults, the stored JSON form and the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.spec import load_spec, spec_from_json, spec_sha256, spec_to_json
from hpo.spec.schema import SCHEMA_PATH, render_schema
from tests.specs import worker_lines

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "search_spaces").glob("*.yaml"))


def test_there_are_examples():
    names = {p.name for p in EXAMPLES}
    assert {"digits_cnn.yaml", "digits_mlp.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_space_preview_and_reference_the_schema(path):
    result = CliRunner().invoke(cli, ["space", "preview", str(path), "-n", "5"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{path} is valid: ")
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[1:6]] == ["1", "2", "3", "4", "5"]
    assert [line.split(":")[0] for line in lines[6:]] in ([], ["budget"])  # a finite space: its size
    assert path.read_text().splitlines()[0] == "# yaml-language-server: $schema=spec.schema.json"


def test_there_is_an_example_per_use_case():
    families = {load_spec(p).model.name for p in EXAMPLES}
    datasets = {load_spec(p).data.name for p in EXAMPLES}
    assert {"mlp", "cnn", "patch_mlp", "squeezenet", "torchvision"} <= families
    assert {"digits", "fashion_mnist", "cifar100", "image_folder"} <= datasets


@pytest.mark.parametrize("name", ["digits_cnn.yaml", "digits_mlp.yaml"])
def test_digits_examples_train(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    runner = CliRunner()
    assert runner.invoke(cli, ["study", "create", str(ROOT / "search_spaces" / name)]).exit_code == 0
    spec = load_spec(ROOT / "search_spaces" / name)
    result = runner.invoke(cli, ["worker", spec.name, "--n-trials", "1", "--rank", "0"])
    assert result.exit_code == 0, result.output
    device, trial, done = worker_lines(result.stdout)  # after the start-up lines
    assert device.startswith("[worker 0] Device: ") and done.startswith("[worker 0] Worker done: 1 trials")
    assert trial.startswith("[worker 0] trial 0 complete after ")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_key_of_the_examples_is_commented(path):
    """Each line that sets a key (outside search) carries a comment saying what it does."""
    in_search = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("search:"):
            in_search = True
        if not in_search or line.startswith("search:"):
            assert "#" in line, f"{path.name}:{number} has no comment: {line!r}"


def test_committed_schema_is_current():
    assert SCHEMA_PATH.read_text() == render_schema(), (
        "search_spaces/spec.schema.json is stale: run `uv run python -m hpo.spec.schema`"
    )


def test_schema_describes_every_top_level_key_and_the_model_families():
    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(schema["properties"]) == {
        "name", "objective", "budget", "sampler", "pruner", "data", "model", "train", "search", "enqueue",
    }
    assert schema["additionalProperties"] is False
    model_refs = json.dumps(schema["properties"]["model"])
    assert "CNNConfig" in model_refs and "MLPConfig" in model_refs


def test_defaults_fill_what_the_spec_leaves_out(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("model: {name: mlp}\n")
    spec = load_spec(path, name="from-cli")
    assert spec.name == "from-cli"
    assert (spec.objective.metric, spec.objective.direction) == ("val_accuracy", "maximize")
    assert spec.sampler.name == "tpe"
    assert spec.pruner.model_dump() == {"name": "successive_halving", "min_resource": 2, "reduction_factor": 2}
    assert spec.budget.n_trials == 100 and spec.data.name == "digits"


def test_naming_successive_halving_is_the_default_and_naming_hyperband_the_former_one(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nmodel: {name: mlp}\n")
    unnamed = load_spec(path).pruner
    path.write_text("name: t\nmodel: {name: mlp}\npruner: {name: successive_halving}\n")
    assert load_spec(path).pruner == unnamed
    path.write_text("name: t\nmodel: {name: mlp}\npruner: {name: hyperband}\n")
    hyperband = load_spec(path).pruner
    assert hyperband.model_dump() == {"name": "hyperband", "min_resource": 1, "max_resource": None,
                                      "reduction_factor": 3}


@pytest.mark.parametrize("train,search", [
    ("{epochs: 1}", "{}"),
    ("{epochs: 2}", "{}"),
    ("{epochs: 1}", "{train.epochs: {choices: [1, 2]}}"),
    ("{epochs: 1}", "{train.epochs: {low: 1, high: 2}}"),
])
def test_the_default_pruner_accepts_trials_no_longer_than_its_first_rung(tmp_path, train, search):
    # min_resource 2 is the default's, not the user's: a spec of 1 or 2 epochs stays valid.
    path = tmp_path / "s.yaml"
    path.write_text(f"name: t\nmodel: {{name: mlp}}\ntrain: {train}\nsearch: {search}\n")
    assert load_spec(path).pruner.name == "successive_halving"
    result = CliRunner().invoke(cli, ["space", "preview", str(path), "-n", "1"])
    assert result.exit_code == 0, result.output


def test_a_sampler_or_pruner_without_a_name_is_the_default_one_with_those_options(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nmodel: {name: mlp}\nsampler: {seed: 3}\npruner: {min_resource: 3}\n")
    spec = load_spec(path)
    assert (spec.sampler.name, spec.sampler.seed) == ("tpe", 3)
    assert (spec.pruner.name, spec.pruner.min_resource) == ("successive_halving", 3)
    # A multi-objective study's default pruner is the median rule (the benchmark behind the
    # single-objective default measured single-objective studies only).
    path.write_text("name: t\nmodel: {name: mlp}\nobjective: [{metric: val_accuracy}, {metric: params}]\n"
                    "pruner: {n_startup_trials: 2}\n")
    spec = load_spec(path)
    assert (spec.pruner.name, spec.pruner.n_startup_trials) == ("median", 2)


def test_direction_follows_the_metric(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nmodel: {name: mlp}\nobjective: {metric: val_loss}\nbudget: {timeout: 1h30m}\n")
    spec = load_spec(path)
    assert spec.objective.direction == "minimize"
    assert spec.budget.timeout == 5400.0


def test_stored_json_round_trips_with_a_stable_hash():
    spec = load_spec(ROOT / "search_spaces" / "digits_cnn.yaml")
    data = json.loads(json.dumps(spec_to_json(spec)))  # as stored in a study's user attrs
    again = spec_from_json(data)
    assert again == spec
    assert spec_sha256(data) == spec_sha256(spec_to_json(again))
    assert len(spec_sha256(data)) == 64
