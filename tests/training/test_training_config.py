"""``data:`` and ``train:`` validation: defaults, ranges and messages that read after ``key: ``."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from hpo.training import DataConfig, EarlyStoppingConfig, TrainConfig


def _only_error(exc: pytest.ExceptionInfo) -> dict:
    [error] = exc.value.errors()
    return error


def test_defaults():
    d = DataConfig()
    assert (d.name, d.val_fraction, d.test_fraction, d.split_seed) == ("digits", 0.2, 0.2, 0)
    assert d.augment == "none"
    t = TrainConfig()
    assert (t.epochs, t.batch_size, t.optimizer, t.lr, t.momentum) == (10, 64, "adam", 1e-3, 0.9)
    assert t.early_stopping is None
    assert (t.schedule, t.warmup_epochs, t.step_size, t.gamma) == ("none", 0, 10, 0.1)
    assert t.min_lr == 0.0
    assert (t.plateau_patience, t.plateau_metric) == (2, "val_loss")
    assert (t.label_smoothing, t.class_weights, t.grad_clip) == (0.0, "none", None)
    assert (t.precision, t.channels_last, t.deterministic) == ("fp32", False, False)


def test_unknown_optimizer_names_close_match_and_known():
    with pytest.raises(ValidationError) as exc:
        TrainConfig(optimizer="adamm")
    error = _only_error(exc)
    assert error["loc"] == ("optimizer",)
    assert error["msg"].startswith("Value error, unknown optimizer 'adamm'; did you mean 'adam'")
    assert error["msg"].endswith("(known: adam, adamax, adamw, rmsprop, sgd)")


def test_unknown_dataset():
    with pytest.raises(ValidationError) as exc:
        DataConfig(name="digts")
    error = _only_error(exc)
    assert error["loc"] == ("name",)
    assert error["msg"].startswith(
        "Value error, unknown dataset 'digts'; did you mean 'digits'? (known: "
    )
    assert "digits" in error["msg"].partition("(known: ")[2]


def test_fractions_must_leave_training_data():
    with pytest.raises(ValidationError, match=r"must be below 1 .* \(got 0\.5 \+ 0\.5\)"):
        DataConfig(val_fraction=0.5, test_fraction=0.5)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (DataConfig, {"val_fraction": 0}),
        (DataConfig, {"test_fraction": 1}),
        (DataConfig, {"shuffle": True}),
        (TrainConfig, {"epochs": 0}),
        (TrainConfig, {"batch_size": 0}),
        (TrainConfig, {"lr": 0}),
        (TrainConfig, {"momentum": 1.0}),
        (TrainConfig, {"weight_decay": -1e-4}),
        (TrainConfig, {"learning_rate": 0.1}),
        (TrainConfig, {"early_stopping": {"patience": 0}}),
        (TrainConfig, {"early_stopping": {"patience": 2, "min_delta": -0.1}}),
        (TrainConfig, {"early_stopping": {}}),
        (TrainConfig, {"early_stopping": {"patience": 2, "metric": "train_loss"}}),
        (TrainConfig, {"schedule": "linear"}),
        (TrainConfig, {"warmup_epochs": -1}),
        (TrainConfig, {"step_size": 0}),
        (TrainConfig, {"gamma": 1.0}),
        (TrainConfig, {"gamma": 0}),
        (TrainConfig, {"min_lr": -1e-6}),
        (TrainConfig, {"plateau_patience": 0}),
        (TrainConfig, {"plateau_metric": "train_loss"}),
        (TrainConfig, {"label_smoothing": 1.0}),
        (TrainConfig, {"class_weights": "inverse"}),
        (TrainConfig, {"grad_clip": 0}),
        (TrainConfig, {"precision": "fp8"}),
        (DataConfig, {"augment": "medium"}),
        (DataConfig, {"augment": ["hflip", "mixup"]}),
        (DataConfig, {"augment": [{"name": "hflip", "p": 1.5}]}),
        (DataConfig, {"augment": [{"name": "hflip", "q": 0.5}]}),
        (DataConfig, {"augment": [{"name": "random_crop", "padding": 0}]}),
        (DataConfig, {"augment": [{"name": "affine", "scale": [1.2, 0.8]}]}),
        (DataConfig, {"augment": [{"name": "affine", "scale": [0, 1]}]}),
        (DataConfig, {"augment": [{"name": "random_erasing", "scale": [0.1, 1.5]}]}),
        (DataConfig, {"augment": [{"name": "random_erasing", "ratio": [0.5]}]}),
    ],
)
def test_rejected(cls, kwargs):
    with pytest.raises(ValidationError):
        cls(**kwargs)


def test_early_stopping_from_mapping():
    t = TrainConfig.model_validate({"early_stopping": {"patience": 3}})
    assert t.early_stopping == EarlyStoppingConfig(patience=3, min_delta=0.0)


def test_unknown_schedule_names_close_match_and_known():
    with pytest.raises(ValidationError) as exc:
        TrainConfig(schedule="cosin")
    error = _only_error(exc)
    assert error["loc"] == ("schedule",)
    assert error["msg"] == (
        "Value error, unknown schedule 'cosin'; did you mean 'cosine'? "
        "(known: cosine, none, one_cycle, plateau, step)"
    )


def test_early_stopping_metric():
    es = TrainConfig.model_validate({"early_stopping": {"patience": 3, "metric": "val_loss"}})
    assert es.early_stopping.metric == "val_loss"
    assert EarlyStoppingConfig(patience=1).metric == "val_accuracy"


@pytest.mark.parametrize("value", ["none", "light", "strong", "hflip", "random_erasing"])
def test_augment_preset_or_single_name_is_kept_as_written(value):
    # A string value stays a string: it is what `search: {data.augment: {choices: ...}}` draws.
    d = DataConfig.model_validate({"augment": value}, strict=True)
    assert d.augment == value
    assert d.model_dump(mode="json")["augment"] == value


def test_augment_list_of_names_and_mappings_round_trips():
    raw = {"augment": ["hflip", {"name": "random_crop", "padding": 2, "padding_mode": "zeros"}]}
    d = DataConfig.model_validate(raw, strict=True)
    hflip, crop = d.augment
    assert (hflip.name, hflip.p) == ("hflip", 0.5)  # a bare name takes every default
    assert (crop.padding, crop.padding_mode) == (2, "zeros")
    dumped = d.model_dump(mode="json")["augment"]
    assert dumped == [
        {"name": "hflip", "p": 0.5},
        {"name": "random_crop", "padding": 2, "padding_mode": "zeros"},
    ]
    assert DataConfig.model_validate({"augment": dumped}, strict=True) == d


def test_unknown_augmentation_in_a_list_is_one_error_at_the_item():
    with pytest.raises(ValidationError) as exc:
        DataConfig.model_validate({"augment": ["hflip", {"name": "rotaton"}]}, strict=True)
    error = _only_error(exc)
    assert error["loc"][0] == "augment" and error["loc"][-1] == 1
    assert "unknown augmentation 'rotaton'; did you mean 'rotation'?" in error["msg"]


def test_registries_and_config_stay_torch_free():
    # Validating train.schedule and data.augment must not import torch.
    code = (
        "import hpo.training.config, hpo.training.schedules, hpo.training.augment\n"
        "import hpo.training.metrics, hpo.training.optim, sys\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
