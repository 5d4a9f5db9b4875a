"""--set KEY=VALUE: values over the file's, validated like the file, problems naming the option."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.errors import SpecError
from hpo.spec import load_spec, spec_sha256, spec_to_json
from tests.specs import write_spec


def test_overrides_set_dotted_keys_with_yaml_values(tmp_path):
    path = write_spec(tmp_path, "s")
    spec = load_spec(path, overrides=["train.lr=1e-3", "budget.n_trials=20", "search.train.lr.high=0.05",
                                      "train.early_stopping.patience=2", "model.activation=gelu"])
    assert spec.train.lr == 0.001 and isinstance(spec.train.lr, float)  # YAML 1.2: 1e-3 is a number
    assert spec.budget.n_trials == 20
    assert spec.search["train.lr"].high == 0.05 and spec.search["train.lr"].low == 1.0e-4
    assert spec.train.early_stopping is not None and spec.train.early_stopping.patience == 2
    assert spec.model.activation == "gelu"


def test_a_mapping_of_python_values_overrides_too(tmp_path):
    path = write_spec(tmp_path, "s")
    assert load_spec(path, overrides={"train.epochs": 3, "name": "other"}).train.epochs == 3
    assert load_spec(path, overrides={"name": "other"}).name == "other"


def test_a_single_string_is_one_override(tmp_path):
    """``overrides="train.lr=0.01"`` from Python is one override, not one per character."""
    import hpo

    path = write_spec(tmp_path, "s")
    assert load_spec(path, overrides="train.epochs=3").train.epochs == 3
    assert hpo.load_spec(path, overrides="train.lr=0.01").train.lr == 0.01


def test_an_override_that_is_not_a_string_is_named(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, "s"), overrides=[("train.lr", 0.01)])  # type: ignore[list-item]
    assert str(caught.value) == ("--set ('train.lr', 0.01): an override is a string KEY=VALUE, not a tuple "
                                 "(expected KEY=VALUE with a dotted KEY, such as train.lr=0.01 or "
                                 "budget.n_trials=20; or a mapping {KEY: value})")


def test_a_new_search_key_is_given_whole(tmp_path):
    path = write_spec(tmp_path, "s")
    spec = load_spec(path, overrides=["search.model.width={low: 8, high: 32}"])
    assert spec.search["model.width"].high == 32 and "train.lr" in spec.search


def test_the_last_override_of_a_key_wins(tmp_path):
    spec = load_spec(write_spec(tmp_path, "s"), overrides=["train.epochs=2", "train.epochs=3"])
    assert spec.train.epochs == 3


def test_no_overrides_keep_the_spec_and_its_hash(tmp_path):
    path = write_spec(tmp_path, "s")
    assert spec_sha256(spec_to_json(load_spec(path, overrides=()))) == spec_sha256(spec_to_json(load_spec(path)))


@pytest.mark.parametrize("override, message", [
    ("train.lrr=0.1", "--set train.lrr=0.1: train.lrr: unknown key (got 'lrr'; expected 'lr' (close match)"),
    ("budget.n_trials=0", "--set budget.n_trials=0: budget.n_trials: out of range (got 0; expected a value >= 1)"),
    ("search.train.lr.high=abc", "--set search.train.lr.high=abc: search.train.lr.high: wrong type (got 'abc'"),
    ("train.lr.x=1", "--set train.lr.x=1: train.lr is 0.001, not a mapping, so it has no key 'x'"),
    ("train.lr", "--set train.lr: no '=' (expected KEY=VALUE with a dotted KEY, such as train.lr=0.01"),
    ("train..lr=1", "--set train..lr=1: an empty part in 'train..lr'"),
    ("train.lr=[1", "--set train.lr=[1: YAML syntax error:"),
    ("train.lr=!!python/object:os.system x",
     "--set train.lr=!!python/object:os.system x: tag !!python/object:os.system is not allowed"),
])
def test_a_bad_override_is_named_in_its_error(tmp_path, override, message):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, "s"), overrides=[override])
    assert str(caught.value).startswith(message), str(caught.value)


def test_file_problems_keep_their_lines_beside_an_override(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmodel: {name: mlp}\ntrain: {epochs: 0}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path, overrides=["train.lrr=1"])
    assert caught.value.problems[0].startswith(f"{path}:3: train.epochs: out of range")
    assert caught.value.problems[1].startswith("--set train.lrr=1: train.lrr: unknown key")


def test_cli_set_on_create_preview_and_quickstart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    path = write_spec(tmp_path, "s")
    runner = CliRunner()
    bad = runner.invoke(cli, ["study", "create", str(path), "--set", "train.lrr=0.1"])
    assert bad.exit_code == 2 and bad.stderr.startswith("Error: --set train.lrr=0.1: train.lrr: unknown key")
    assert not (tmp_path / "hpo-studies.journal").exists()  # nothing created
    preview = runner.invoke(cli, ["space", "preview", str(path), "-n", "2", "--format", "json",
                                  "--set", "search.train.lr={choices: [0.5]}"])
    assert preview.exit_code == 0 and preview.stdout.count('"train.lr": 0.5') == 2
    quick = runner.invoke(cli, ["quickstart", "--set", "budget.n_trials=-1"])
    assert quick.exit_code == 2
    assert quick.stderr.startswith("Error: --set budget.n_trials=-1: budget.n_trials: out of range")
    made = runner.invoke(cli, ["study", "create", str(path), "--set", "name=t2", "--set", "budget.n_trials=7"])
    assert made.exit_code == 0 and "Created study 't2'" in made.stdout
