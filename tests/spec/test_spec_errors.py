"""Malformed specs: every problem is reported with its file, line and key path."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.errors import SpecError
from hpo.spec import load_spec

BASE = "name: t\nmodel: {name: cnn}\n"

# (case id, spec text, [(line, key path, fragment of the message), ...])
CASES = [
    ("a family's key searched without when", "name: t\nmodel: {name: cnn}\nsearch:\n"
     "  model.name: {choices: [squeezenet, cnn]}\n  model.n_fire: {low: 2, high: 4}\n",
     [(5, "search.model.n_fire", "not a key of model family cnn, which model.name may choose "
                                 "(expected when: {model.name: squeezenet})")]),
    ("an arch one searched family lacks", "name: t\nmodel: {name: torchvision, arch: resnet50}\nsearch:\n"
     "  model.name: {choices: [torchvision, timm]}\n  model.arch: {choices: [mobilenet_v3_small, xception41]}\n",
     [(5, "search.model.arch.choices[0]", "not valid for model family timm, which model.name may choose: "
                                          "unknown timm model 'mobilenet_v3_small'"),
      (5, "search.model.arch.choices[1]", "not valid for model family torchvision")]),
    ("bad yaml", "name: t\nmodel: {name: cnn\ntrain: {lr: 1}\n",
     [(3, "YAML syntax error", "started on line 2")]),
    ("duplicate key", "name: t\nname: u\nmodel: {name: cnn}\n",
     [(2, "name", "duplicate key (first given on line 1)")]),
    ("unknown top-level key", BASE + "serach: {}\n",
     [(3, "serach", "unknown key (got 'serach'; expected 'search' (close match)")]),
    ("misspelt model name", "name: t\nmodel:\n  name: cnnn\n",
     [(3, "model.name", "unknown model (got 'cnnn'; expected 'cnn' (close match); "
                        "one of: cnn, custom, mlp, patch_mlp, squeezenet, timm, torchvision)")]),
    ("misspelt optimizer", BASE + "train:\n  optimizer: adamm\n",
     [(4, "train.optimizer", "unknown optimizer 'adamm'; did you mean 'adam'")]),
    ("misspelt optimizer among choices", BASE + "search:\n  train.optimizer: {choices: [sgd, nadam]}\n",
     [(4, "search.train.optimizer.choices[1]", "unknown optimizer 'nadam'; did you mean 'adam'")]),
    ("low > high", BASE + "search:\n  train.lr:\n    low: 0.1\n    high: 1e-5\n",
     [(5, "search.train.lr.low", "low is greater than high (got 0.1; expected a value <= high (1e-05))")]),
    ("log with low <= 0", BASE + "search:\n  train.lr: {low: 0, high: 0.1, log: true}\n",
     [(4, "search.train.lr.low", "a log scale needs low > 0 (got 0")]),
    ("when on an unknown path",
     BASE + "search:\n  train.momentum: {low: 0.8, high: 0.99, when: {train.optimiser: sgd}}\n",
     [(4, "search.train.momentum.when.train.optimiser",
       "unknown path in when (got 'train.optimiser'; expected 'train.optimizer'")]),
    ("when with an impossible value", BASE + "search:\n  train.optimizer: {choices: [adam, sgd]}\n"
     "  train.momentum: {low: 0.8, high: 0.99, when: {train.optimizer: rmsprop}}\n",
     [(5, "search.train.momentum.when.train.optimizer", "impossible value")]),
    ("when on a fixed value that never holds",
     BASE + "search:\n  train.nesterov: {choices: [true, false], when: {train.optimizer: sgd}}\n",
     [(4, "search.train.nesterov.when.train.optimizer", "never true: train.optimizer is fixed to 'adam'")]),
    ("repeat on a non-int", BASE + "search:\n  model.activation: {choices: [relu, gelu]}\n"
     "  model.filters: {low: 8, high: 64, repeat: model.activation}\n",
     [(5, "search.model.filters.repeat", "repeat needs an integer count, and model.activation is not one")]),
    ("repeat of a single-valued key",
     BASE + "search:\n  model.pool_size: {choices: [2, 3], repeat: model.n_blocks}\n",
     [(4, "search.model.pool_size.repeat", "model.pool_size takes a single value")]),
    ("per-block list of the wrong length", BASE.replace("{name: cnn}", "{name: cnn, n_blocks: 3, stride: [1, 2]}"),
     [(2, "model.stride", "stride lists 2 values but n_blocks is 3")]),
    ("wrong types", "name: t\nmodel: {name: cnn, n_blocks: two}\ntrain:\n  epochs: 1.5\n  batch_size: [1]\n",
     [(2, "model.n_blocks", "wrong type (got 'two'; expected an integer)"),
      (4, "train.epochs", "wrong type (got 1.5; expected an integer)"),
      (5, "train.batch_size", "wrong type (got [1]; expected an integer)")]),
    ("key of another model family", "name: t\nmodel:\n  name: mlp\n  n_blocks: 3\n",
     [(4, "model.n_blocks", "unknown key (got 'n_blocks'; expected one of: activation,")]),
    ("unknown search path", BASE + "search:\n  train.learning_rate: {low: 1e-4, high: 1e-2}\n  lr: {low: 1, high: 2}\n",
     [(4, "search.train.learning_rate", "unknown path"),
      (5, "search.lr", "a search key is a dotted path into data, model or train")]),
    ("searched value outside the key's range", BASE + "search:\n  model.dropout: {low: 0.0, high: 1.5}\n",
     [(4, "search.model.dropout.high", "out of range (got 1.5; expected a value < 1.0)")]),
    ("distribution shapes", BASE + "search:\n  model.dropout: {low: 0.1}\n  model.kernel_size: {choices: []}\n"
     "  train.batch_size: {low: 16, high: 128, step: 0.5}\n"
     "  train.lr: {low: 1e-4, high: 1e-2, log: true, step: 0.001}\n"
     "  model.fc_width: {choices: [1, 2], low: 3}\n  model.n_blocks: {low: 1, high: 3, foo: 1}\n",
     [(4, "search.model.dropout.high", "required key is missing"),
      (5, "search.model.kernel_size.choices", "choices is empty"),
      (6, "search.train.batch_size.step", "an int distribution needs whole numbers (got 0.5)"),
      (7, "search.train.lr.step", "step cannot be combined with log: true"),
      (8, "search.model.fc_width", "give either choices or low/high, not both"),
      (9, "search.model.n_blocks.foo", "unknown key (got 'foo'")]),
    ("sampler, pruner, budget, objective",
     BASE + "sampler: {name: tpee}\npruner: {name: hyperband, min_resource: 0, max_resourc: 4}\n"
     "budget: {n_trials: 0, timeout: 5x}\nobjective: {metric: val_acc}\n",
     [(3, "sampler.name", "unknown sampler (got 'tpee'; expected 'tpe' (close match)"),
      (4, "pruner.min_resource", "out of range (got 0; expected a value >= 1)"),
      (4, "pruner.max_resourc", "expected 'max_resource'"),
      (5, "budget.n_trials", "out of range (got 0; expected a value >= 1)"),
      (5, "budget.timeout", "expected a duration such as 90, '45s', '30m', '6h' or '1h30m' (got '5x')"),
      (6, "objective.metric", "unknown value (got 'val_acc'; expected 'val_accuracy' (close match)")]),
    ("heartbeat grace below two intervals", BASE + "budget:\n  heartbeat_interval: 10\n  heartbeat_grace_period: 15\n",
     [(3, "budget", "heartbeat_grace_period (15 s) must be at least twice heartbeat_interval (10 s)")]),
    ("cyclic conditions", BASE + "search:\n  train.optimizer: {choices: [sgd, adam], when: {train.momentum: 0.9}}\n"
     "  train.momentum: {choices: [0.9, 0.95], when: {train.optimizer: sgd}}\n",
     [(4, "search.train.optimizer", "when/repeat conditions form a cycle")]),
    ("not a mapping", "- a\n- b\n", [(1, "(top level)", "a spec is a mapping of keys")]),
    ("invalid study name", "name: 'bad name!'\nmodel: {name: cnn}\n",
     [(1, "name", "invalid name (got 'bad name!'")]),
    ("missing model", "name: t\n", [(1, "model", "required key is missing")]),
    ("width list does not match depth", "name: t\nmodel: {name: mlp, n_layers: 2, width: [8, 8, 8]}\n",
     [(2, "model", "width lists 3 values but n_layers is 2")]),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_problem_names_its_line_and_key(tmp_path, text, expected):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    problems = caught.value.problems
    assert len(problems) == len(expected), problems
    for (line, key, fragment), problem in zip(expected, problems):
        assert problem.startswith(f"{path}:{line}: {key}"), problem
        assert fragment in problem, problem


def test_cli_prints_every_problem_on_one_error_line_and_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + "train:\n  lr: -1\n  optimizer: adamm\n")
    result = CliRunner().invoke(cli, ["study", "create", str(path), "--storage", str(tmp_path / "s.journal")])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines == [
        f"Error: {path}:4: train.lr: out of range (got -1; expected a value > 0.0)",
        f"Error: {path}:5: train.optimizer: unknown optimizer 'adamm'; did you mean 'adam' or 'adamw' "
        "or 'adamax'? (known: adam, adamax, adamw, rmsprop, sgd)",
    ]
    assert "Traceback" not in result.output
    assert not (tmp_path / "s.journal").exists(), "nothing is created for a bad spec"


def test_missing_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["space", "preview", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path / 'nope.yaml'}: no such file\n"


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\n")
    result = CliRunner().invoke(cli, ["--debug", "space", "preview", str(path)])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().endswith(
        f"Error: {path}:1: model: required key is missing "
        "(expected a mapping with name: cnn | custom | mlp | patch_mlp | squeezenet | timm | torchvision)")


def test_yaml_1_2_numbers_and_booleans(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent("""\
        name: t
        model: {name: cnn, batch_norm: false}
        train: {lr: 1e-3, weight_decay: 5E-4}
        search:
          train.lr: {low: 1e-5, high: 1e-1, log: true}
        """))
    spec = load_spec(path)
    assert spec.train.lr == 0.001 and spec.train.weight_decay == 0.0005
    assert spec.search["train.lr"].low == 1e-5 and spec.search["train.lr"].kind() == "float"
    path.write_text("name: t\nmodel: {name: cnn, batch_norm: yes}\n")  # YAML 1.1 boolean: a string in 1.2
    with pytest.raises(SpecError, match=r"model.batch_norm: wrong type \(got 'yes'; expected true or false\)"):
        load_spec(path)


def test_grid_sampler_needs_choices(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "sampler: {name: grid}\nsearch:\n  train.lr: {low: 1e-4, high: 1e-2}\n"
                    "  train.momentum: {choices: [0.8, 0.9], when: {train.optimizer: adam}}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        f"{path}:5: search.train.lr: the grid sampler cannot take a range: give choices: [...] "
        "(got 'train.lr'; expected e.g. choices: [0.0001, 0.001, 0.01], or another sampler)",
        f"{path}:6: search.train.momentum: the grid sampler cannot use when or repeat (got 'train.momentum')",
    ]


def test_grid_sampler_on_a_log_range_says_to_give_choices(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "sampler: {name: grid}\nsearch:\n"
                    "  train.weight_decay: {low: 1.0e-6, high: 1.0e-3, log: true}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        f"{path}:5: search.train.weight_decay: the grid sampler cannot take a range: give choices: [...] "
        "(got 'train.weight_decay'; expected e.g. choices: [1e-06, 1e-05, 0.0001, 0.001], or another sampler)"]


def test_grid_budget_cannot_exceed_the_grid(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "budget: {n_trials: 5}\nsampler: {name: grid}\nsearch:\n"
                    "  train.batch_size: {choices: [32, 64]}\n  train.lr: {choices: [0.1, 0.01]}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        f"{path}:3: budget.n_trials: the grid has 4 combinations, fewer than budget.n_trials "
        "(got 5; expected budget.n_trials <= 4)"]


def test_multi_objective_rules(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "objective:\n  - {metric: params}\n  - {metric: val_accuracy}\n  - {metric: params}\n"
                    "pruner: {name: hyperband}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        f"{path}:4: objective[0].metric: the first objective must be a metric reported every epoch "
        "(got 'params'; expected one of: val_accuracy, val_loss, train_loss (list further metrics after it))",
        f"{path}:6: objective[2].metric: metric listed twice (got 'params')",
        f"{path}:7: pruner.name: Optuna's hyperband cannot prune a multi-objective study "
        "(got 'hyperband'; expected median, successive_halving or none)",
    ]


def test_multi_objective_defaults_to_the_median_pruner(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "objective: [{metric: val_accuracy}, {metric: params}]\n")
    spec = load_spec(path)
    assert [(o.metric, o.direction) for o in spec.objectives] == [("val_accuracy", "maximize"), ("params", "minimize")]
    assert spec.pruner.name == "median"
