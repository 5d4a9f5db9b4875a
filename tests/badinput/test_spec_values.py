"""Bad VALUES in a well-formed spec: numbers that are not finite, seeds and sizes outside what
torch, numpy and Optuna accept, ``null`` where a value is needed, repeat counts that cannot
fill their list, unsafe study names, keys that are not strings.

Each was accepted before (issue 12, item 7) and then failed every trial or killed the worker;
now ``hpo study create`` refuses it with exit 2 and one ``Error:`` line naming the line, the
key and the accepted range, and writes nothing to the storage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.spec.display import show
from tests.badinput import assert_refused, snapshot, within_bounds

CNN = "name: t\nmodel: {name: cnn}\n"
MLP = "name: t\nmodel: {name: mlp, n_layers: 2}\n"
BIG = "1000000000000000000000000000000"  # 10**30
NAME_RULE = "expected letters, digits, '.', '_' or '-', starting with a letter or digit, at most 100 characters"

# (id, spec text, fragments of the one error line; "{f}" is the file's path)
CASES: list[tuple[str, str, list[str]]] = [
    # sizes: bounded where torch can still build the layer
    ("filters 10**30", f"name: t\nmodel: {{name: cnn, filters: {BIG}}}\n",
     [f"{{f}}:2: model.filters: out of range (got {BIG}; expected a value <= 16384)"]),
    ("one of the filters too large", "name: t\nmodel: {name: cnn, filters: [16, 100000]}\n",
     ["{f}:2: model.filters[1]: out of range (got 100000; expected a value <= 16384)"]),
    ("mlp width 10**30", f"name: t\nmodel: {{name: mlp, width: {BIG}}}\n",
     [f"{{f}}:2: model.width: out of range (got {BIG}; expected a value <= 16384)"]),
    ("fc_width 10**30", f"name: t\nmodel: {{name: cnn, fc_width: {BIG}}}\n",
     [f"{{f}}:2: model.fc_width: out of range (got {BIG}; expected a value <= 16384)"]),
    ("squeezenet expand 10**30", f"name: t\nmodel: {{name: squeezenet, expand: {BIG}}}\n",
     [f"{{f}}:2: model.expand: out of range (got {BIG}; expected a value <= 16384)"]),
    ("batch_size 10**30", CNN + f"train: {{batch_size: {BIG}}}\n",
     [f"{{f}}:3: train.batch_size: out of range (got {BIG}; expected a value <= 1048576)"]),
    ("warmup_epochs 10**30", CNN + f"train: {{warmup_epochs: {BIG}}}\n",
     [f"{{f}}:3: train.warmup_epochs: out of range (got {BIG}; expected a value <= 10000)"]),
    ("hyperband max_resource 10**30", CNN + f"pruner: {{name: hyperband, max_resource: {BIG}}}\n",
     [f"{{f}}:3: pruner.max_resource: out of range (got {BIG}; expected a value <= 10000)"]),
    # seeds: numpy takes [0, 2**32); a worker adds its rank (below 2**31) to sampler.seed
    ("train.seed 10**30", CNN + f"train: {{seed: {BIG}}}\n",
     [f"{{f}}:3: train.seed: out of range (got {BIG}; expected a value <= 2147483647)"]),
    ("data.split_seed -1", CNN + "data: {split_seed: -1}\n",
     ["{f}:3: data.split_seed: out of range (got -1; expected a value >= 0)"]),
    ("sampler.seed 2**32 - 1", CNN + "sampler: {seed: 4294967295}\n",
     ["{f}:3: sampler.seed: out of range (got 4294967295; expected a value <= 2147483647)"]),
    ("random sampler seed -1", CNN + "sampler: {name: random, seed: -1}\n",
     ["{f}:3: sampler.seed: out of range (got -1; expected a value >= 0)"]),
    # numbers that are not finite
    ("heartbeat_interval .inf", CNN + "budget: {heartbeat_interval: .inf}\n",
     ["{f}:3: budget.heartbeat_interval: not a finite number (got .inf; expected a finite number > 0 and <= 3600)"]),
    ("heartbeat_interval over an hour", CNN + "budget: {heartbeat_interval: 1e9}\n",
     ["{f}:3: budget.heartbeat_interval: out of range (got 1000000000.0; expected a value <= 3600.0)"]),
    ("heartbeat_grace_period .inf", CNN + "budget: {heartbeat_grace_period: .inf}\n",
     ["{f}:3: budget.heartbeat_grace_period: not a finite number (got .inf; expected a finite number > 0 and "
      "<= 86400)"]),
    ("timeout .inf", CNN + "budget: {timeout: .inf}\n",
     ["{f}:3: budget.timeout: a duration must be a finite number of seconds (got .inf)"]),
    ("checkpoint_interval .nan", CNN + "budget: {checkpoint_interval: .nan}\n",
     ["{f}:3: budget.checkpoint_interval: not a finite number (got .nan; expected a finite number >= 0)"]),
    ("lr .inf", CNN + "train: {lr: .inf}\n",
     ["{f}:3: train.lr: not a finite number (got .inf; expected a finite number > 0)"]),
    ("lr .nan", CNN + "train: {lr: .nan}\n",
     ["{f}:3: train.lr: not a finite number (got .nan; expected a finite number > 0)"]),
    ("weight_decay .inf", CNN + "train: {weight_decay: .inf}\n",
     ["{f}:3: train.weight_decay: not a finite number (got .inf; expected a finite number >= 0)"]),
    ("grad_clip .inf", CNN + "train: {grad_clip: .inf}\n",
     ["{f}:3: train.grad_clip: not a finite number (got .inf; expected a finite number > 0)"]),
    ("min_lr .inf", CNN + "train: {min_lr: .inf}\n",
     ["{f}:3: train.min_lr: not a finite number (got .inf; expected a finite number >= 0)"]),
    ("init_std -.inf", "name: t\nmodel: {name: cnn, init_std: -.inf}\n",
     ["{f}:2: model.init_std: not a finite number (got -.inf; expected a finite number > 0 and <= 1)"]),
    ("an augmentation range with .inf", CNN + "data: {augment: [{name: affine, scale: [0.9, .inf]}]}\n",
     ["{f}:3: data.augment[0].scale[1]: not a finite number (got .inf; expected a finite number)"]),
    ("a search bound .inf", CNN + "search:\n  train.lr: {low: 1e-4, high: .inf, log: true}\n",
     ["{f}:4: search.train.lr.high: not a finite number (got .inf; expected a finite number)"]),
    ("a search bound -.inf", CNN + "search:\n  train.weight_decay: {low: -.inf, high: 0.1}\n",
     ["{f}:4: search.train.weight_decay.low: not a finite number (got -.inf; expected a finite number)"]),
    ("a search step .nan", CNN + "search:\n  model.dropout: {low: 0.0, high: 0.5, step: .nan}\n",
     ["{f}:4: search.model.dropout.step: not a finite number (got .nan; expected a finite number)"]),
    ("a search bound outside the key's own range", CNN + "search:\n  train.lr: {low: -1.0, high: 0.1}\n",
     ["{f}:4: search.train.lr.low: not a valid value for train.lr: out of range (got -1.0; expected a value > 0.0)"]),
    # null among choices: held to the field's own type
    ("null among optimizer choices", CNN + "search:\n  train.optimizer: {choices: [adam, null]}\n",
     ["{f}:4: search.train.optimizer.choices[1]: not a valid value for train.optimizer: wrong type "
      "(got null; expected a string)"]),
    ("null among lr choices", CNN + "search:\n  train.lr: {choices: [0.1, null]}\n",
     ["{f}:4: search.train.lr.choices[1]: not a valid value for train.lr: wrong type (got null; expected a number)"]),
    ("null among filters choices", CNN + "search:\n  model.filters: {choices: [null, 32]}\n",
     ["{f}:4: search.model.filters.choices[0]: not a valid value for model.filters: wrong type (got null;"]),
    # repeat: the count must fill the list the key takes, and stay small
    ("repeat by a count that does not match the list",
     MLP + "search:\n  model.width: {low: 8, high: 64, repeat: train.epochs}\n",
     ["{f}:4: search.model.width.repeat: with train.epochs = 10, width lists 10 values but n_layers is 2 "
      "(got 'train.epochs')"]),
    ("repeat by a count of zero", CNN + "search:\n  model.filters: {low: 8, high: 64, repeat: data.split_seed}\n",
     ["{f}:4: search.model.filters.repeat: with data.split_seed = 0, filters lists 0 values but n_blocks is 2"]),
    ("repeat by train.seed",
     CNN + "train: {seed: 100000}\nsearch:\n  model.filters: {low: 8, high: 64, repeat: train.seed}\n",
     ["{f}:5: search.model.filters.repeat: train.seed can be 100000, too many values to sample "
      "(got 'train.seed'; expected a count of at most 64)"]),
    ("repeat by a searched huge count", CNN + "search:\n  train.epochs: {low: 1, high: 10000}\n"
     "  model.filters: {low: 8, high: 64, repeat: train.epochs}\n",
     ["{f}:5: search.model.filters.repeat: train.epochs can be 10000, too many values to sample"]),
    # study names and keys
    ("a name with a slash", "name: a/b\nmodel: {name: cnn}\n", ["{f}:1: name: invalid name (got 'a/b'; " + NAME_RULE]),
    ("a non-ASCII name", "name: étude\nmodel: {name: cnn}\n", ["{f}:1: name: invalid name (got 'étude'; " + NAME_RULE]),
    ("a name of 101 characters", f"name: {'n' * 101}\nmodel: {{name: cnn}}\n",
     ["{f}:1: name: invalid name (got 'nnnn"]),
    ("a name ending in a newline", 'name: "abc\\n"\nmodel: {name: cnn}\n', ["{f}:1: name: invalid name (got 'abc\\n'"]),
    ("a number as a search key", CNN + "search:\n  1: {low: 1, high: 2}\n",
     ["{f}:4: search: a key must be a string (got 1; expected a name, quoted if it looks like a number)"]),
    ("null as a search key", CNN + "search:\n  null: {low: 1, high: 2}\n",
     ["{f}:4: search: a key must be a string (got null;"]),
    ("a boolean as a when key", CNN + "search:\n  train.lr: {low: 0.1, high: 0.2, when: {true: 1}}\n",
     ["{f}:4: search.train.lr.when: a key must be a string (got true;"]),
]


def create(tmp_path: Path, spec: Path, *options: str) -> object:
    """``hpo study create SPEC --storage <journal> OPTIONS`` in-process, bounded, and the
    directory unchanged after it."""
    before = snapshot(tmp_path)
    with within_bounds(seconds=30, megabytes=200):
        result = CliRunner().invoke(cli, ["study", "create", str(spec), "--storage", str(tmp_path / "s.journal"),
                                          *options])
    assert snapshot(tmp_path) == before, "nothing may be created or changed"
    return result


@pytest.mark.parametrize("text, says", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_value_is_refused_in_one_line(tmp_path, text, says):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    assert_refused(create(tmp_path, spec), says=[s.format(f=spec) for s in says])


@pytest.mark.parametrize("name", ["a/b", "../up", "étude", "n" * 101, "-leading-dash", "with space", ""],
                         ids=["slash", "dot-dot", "non-ASCII", "101 characters", "leading dash", "space", "empty"])
def test_a_bad_name_option_is_refused(tmp_path, name):
    spec = tmp_path / "spec.yaml"
    spec.write_text(CNN)
    assert_refused(create(tmp_path, spec, "--name", name),
                   says=f"Error: --name: invalid name (got {show(name)}; {NAME_RULE})")


@pytest.mark.parametrize("text", [
    CNN + "search:\n  train.grad_clip: {choices: [null, 1.0]}\n",
    "name: t\nmodel: {name: cnn}\nsearch:\n  model.n_blocks: {low: 1, high: 8}\n"
    "  model.filters: {low: 8, high: 64, log: true, repeat: model.n_blocks}\n",
    CNN + "sampler: {seed: 2147483647}\ntrain: {seed: 2147483647}\ndata: {split_seed: 0}\n",
    CNN + "budget: {heartbeat_interval: 3600, heartbeat_grace_period: 86400}\n",
], ids=["null where the key takes null", "repeat up to the count's own limit", "the largest seeds",
        "the longest heartbeat"])
def test_values_at_the_limits_are_accepted(tmp_path, text):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    result = CliRunner().invoke(cli, ["study", "create", str(spec), "--storage", str(tmp_path / "s.journal")])
    assert result.exit_code == 0, result.output
