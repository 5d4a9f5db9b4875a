"""Search space: dependency order, `when` conditions, `repeat` lists, resolved configs."""

from __future__ import annotations

import optuna
import pytest

from hpo.errors import HpoError
from hpo.spec import load_spec
from hpo.spec.space import fixed_config, preview, resolve, sample_config, sampling_order

SPEC = """\
name: t
model: {name: cnn, n_blocks: 2}
train: {optimizer: adam}
search:
  model.filters: {low: 8, high: 64, log: true, repeat: model.n_blocks}
  train.momentum: {low: 0.5, high: 0.9, when: {train.optimizer: [sgd, rmsprop]}}
  train.optimizer: {choices: [sgd, adam, rmsprop]}
  model.n_blocks: {low: 1, high: 4}
  train.batch_size: {choices: [16, 32], type: categorical}
  train.lr: {low: 1e-4, high: 1e-1, log: true}
  model.dropout: {low: 0.0, high: 0.5, step: 0.1}
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return load_spec(path)


def test_parameters_come_after_what_they_depend_on(spec):
    order = sampling_order(spec.search)
    assert order.index("model.n_blocks") < order.index("model.filters")
    assert order.index("train.optimizer") < order.index("train.momentum")
    assert set(order) == set(spec.search)


def test_sampled_configs_honour_when_and_repeat(spec):
    drawn = preview(spec, 40, seed=1)
    optimizers = set()
    for params, config in drawn:
        n_blocks = config["model"]["n_blocks"]
        assert config["model"]["filters"] == [params[f"model.filters[{i}]"] for i in range(n_blocks)]
        assert not any(f"model.filters[{i}]" in params for i in range(n_blocks, 4))
        assert all(8 <= f <= 64 and isinstance(f, int) for f in config["model"]["filters"])
        optimizer = config["train"]["optimizer"]
        optimizers.add(optimizer)
        if optimizer in ("sgd", "rmsprop"):
            assert 0.5 <= params["train.momentum"] <= 0.9
            assert config["train"]["momentum"] == params["train.momentum"]
        else:
            assert "train.momentum" not in params
            assert config["train"]["momentum"] == 0.9  # the fixed default stays
        assert round(config["model"]["dropout"] * 10, 6) == round(config["model"]["dropout"] * 10)
        assert config["train"]["batch_size"] in (16, 32)
    assert optimizers == {"sgd", "adam", "rmsprop"}


def test_resolved_config_is_complete_and_valid(spec):
    _, config = preview(spec, 1)[0]
    assert set(config) == {"data", "model", "train"}
    from hpo.training.config import DataConfig

    assert config["data"] == DataConfig().model_dump(mode="json")  # every key, defaults filled
    assert {"kernel_size", "pool", "batch_norm", "fc_width", "activation", "init"} <= set(config["model"])
    assert {"epochs", "seed", "weight_decay", "nesterov", "early_stopping"} <= set(config["train"])


def test_int_and_float_distributions_follow_the_bounds(spec):
    study = optuna.create_study()
    trial = study.ask()
    sample_config(trial, spec)
    distributions = trial.distributions
    assert isinstance(distributions["model.n_blocks"], optuna.distributions.IntDistribution)
    assert isinstance(distributions["train.lr"], optuna.distributions.FloatDistribution)
    assert distributions["train.lr"].log
    assert distributions["model.dropout"].step == 0.1
    assert isinstance(distributions["train.batch_size"], optuna.distributions.CategoricalDistribution)


def test_nested_keys_can_be_searched(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: t\nmodel: {name: mlp}\nsearch:\n  train.early_stopping.patience: {low: 2, high: 4}\n")
    _, config = preview(load_spec(path), 1)[0]
    assert 2 <= config["train"]["early_stopping"]["patience"] <= 4
    assert config["train"]["early_stopping"]["min_delta"] == 0.0


def test_model_family_can_be_searched(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: t\nmodel: {name: mlp, dropout: 0.2}\nsearch:\n"
        "  model.name: {choices: [mlp, cnn]}\n"
        "  model.n_blocks: {low: 1, high: 2, when: {model.name: cnn}}\n"
        "  model.n_layers: {low: 1, high: 2, when: {model.name: mlp}}\n"
    )
    families = set()
    for params, config in preview(load_spec(path), 20):
        families.add(config["model"]["name"])
        assert config["model"]["dropout"] == 0.2  # a shared fixed key carries over
        if config["model"]["name"] == "cnn":
            assert "n_layers" not in config["model"] and "model.n_layers" not in params
    assert families == {"mlp", "cnn"}


def test_max_epochs_is_the_largest_a_trial_can_train(tmp_path):
    from hpo.spec.space import max_epochs

    path = tmp_path / "spec.yaml"
    path.write_text("name: t\nmodel: {name: mlp}\ntrain: {epochs: 5}\n")
    assert max_epochs(load_spec(path)) == 5
    path.write_text("name: t\nmodel: {name: mlp}\ntrain: {epochs: 5}\nsearch:\n  train.epochs: {low: 3, high: 20}\n")
    assert max_epochs(load_spec(path)) == 20
    path.write_text("name: t\nmodel: {name: mlp}\nsearch:\n  train.epochs: {choices: [4, 12, 8]}\n")
    assert max_epochs(load_spec(path)) == 12


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_searched_count_per_class_takes_the_place_of_the_default_fraction(tmp_path, split):
    # The fixed config holds the fraction's default (0.2); a sampled count per class must not
    # then read as "both given" and fail every trial.
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: t\ndata: {{name: digits}}\nmodel: {{name: mlp}}\n"
                    f"search:\n  data.{split}_per_class: {{choices: [5, 10]}}\n")
    spec = load_spec(path)
    study = optuna.create_study()
    config = sample_config(study.ask(), spec)
    assert getattr(config.data, f"{split}_per_class") in (5, 10)
    assert getattr(config.data, f"{split}_fraction") is None
    other = "test" if split == "val" else "val"
    assert getattr(config.data, f"{other}_fraction") == 0.2


def test_an_invalid_sampled_configuration_is_one_line(tmp_path):
    # What the spec check cannot foresee (a stored or hand-made set of values) is one line.
    path = tmp_path / "spec.yaml"
    path.write_text("name: t\ndata: {name: digits}\nmodel: {name: mlp}\n")
    with pytest.raises(HpoError) as caught:
        resolve(fixed_config(load_spec(path)), {"model.width": -1, "train.lr": "fast"})
    assert "\n" not in str(caught.value)
    assert str(caught.value) == ("the sampled configuration is invalid: model.width: out of range "
                                 "(got -1; expected a value >= 1)")
