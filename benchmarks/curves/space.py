"""The discretised space of the recorded table: the digits CNN space of
search_spaces/digits_cnn.yaml with a few values per hyperparameter, on a fixed task.

A configuration is a dict of the names in VALUES (``train.momentum`` only for sgd); the
table holds every one of them. Numeric hyperparameters are ordinal: a strategy that samples
them from a range is answered by the nearest recorded value (on a log scale where SCALES
says ``log``), as tabular benchmarks do (HPOBench, LCBench).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

EPOCHS = 20  # a full trial
SEEDS = (0, 1, 2)  # train.seed: initialisation, shuffling, dropout; the split stays fixed
# 20 % of digits' training images (~215), validation and test whole: bad configurations
# score 0.1-0.5 and good ones ~0.9, and 20 epochs leave room for slow starters (the variant
# whose heavy tail BENCHMARKS.md reported for the live search_efficiency check).
DATA = {"name": "digits", "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0, "train_fraction": 0.2}
MODEL = {"name": "cnn", "pool": "max", "batch_norm": True, "fc_width": 64, "activation": "relu"}
TRAIN = {"epochs": EPOCHS, "nesterov": False, "weight_decay": 0.0}

VALUES: dict[str, tuple[Any, ...]] = {
    "train.lr": (1e-4, 4e-4, 1.6e-3, 6.4e-3, 2.56e-2),
    "train.batch_size": (32, 128),
    "train.optimizer": ("sgd", "adam", "adamax"),
    "train.momentum": (0.8, 0.95),  # only when train.optimizer is sgd
    "model.n_blocks": (1, 2, 3),
    "model.filters": (8, 32),  # every block
    "model.kernel_size": (3, 5),
    "model.dropout": (0.0, 0.4),
    "model.init": ("default", "kaiming_normal", "xavier_normal"),
}
CATEGORICAL = ("train.optimizer", "model.init")  # unordered; the rest are ordinal
SCALES = {"train.lr": "log", "train.batch_size": "log", "model.filters": "log"}  # else linear
CONDITIONS = {"train.momentum": ("train.optimizer", "sgd")}


def active(name: str, config: dict[str, Any]) -> bool:
    """Whether ``name`` takes part in ``config`` (its condition, if any, holds)."""
    condition = CONDITIONS.get(name)
    return condition is None or config.get(condition[0]) == condition[1]


def configurations() -> Iterator[dict[str, Any]]:
    """Every configuration of the table, in the table's order."""
    names = [n for n in VALUES if n not in CONDITIONS]
    for values in itertools.product(*(VALUES[n] for n in names)):
        config = dict(zip(names, values))
        for name, (parent, value) in CONDITIONS.items():
            if config[parent] == value:
                for choice in VALUES[name]:
                    yield order({**config, name: choice})
                break
        else:
            yield order(config)


def order(config: dict[str, Any]) -> dict[str, Any]:
    return {n: config[n] for n in VALUES if n in config}


def key(config: dict[str, Any]) -> tuple:
    """A configuration's identity: its active values in VALUES' order."""
    return tuple((n, config[n]) for n in VALUES if active(n, config))


def nearest(name: str, value: Any, values: dict[str, tuple[Any, ...]] = VALUES) -> Any:
    """The recorded value of ``name`` closest to ``value`` (categoricals must match)."""
    choices = values[name]
    if name in CATEGORICAL or isinstance(value, (str, bool)):
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not in the table (accepted: {list(choices)})")
        return value
    scale = math.log if SCALES.get(name) == "log" else float
    return min(choices, key=lambda c: abs(scale(c) - scale(value)))


def snap(config: dict[str, Any], values: dict[str, tuple[Any, ...]] = VALUES) -> dict[str, Any]:
    """A proposed configuration mapped onto the table (``values``: what it holds of each
    name): each active value to its nearest."""
    snapped = {n: nearest(n, config[n], values) for n in values if n in config and n not in CONDITIONS}
    snapped.update({n: nearest(n, config[n], values) for n in CONDITIONS if n in values and active(n, snapped)})
    return order(snapped)


def ranges(values: dict[str, tuple[Any, ...]] = VALUES) -> dict[str, dict[str, Any]]:
    """The space as a strategy is given it: a categorical's choices, or an ordinal's range
    (``low``, ``high``, ``log``, ``integer``) whose samples are snapped onto ``values``; an
    ordinal of two values is given as its choices.
    A name with one value is fixed: left out. Every strategy gets the same description."""
    described: dict[str, dict[str, Any]] = {}
    for name, choices in values.items():
        if len(choices) < 2:
            continue
        if name in CATEGORICAL or len(choices) == 2:  # two ordinal values: nothing between
            described[name] = {"choices": list(choices)}
        else:
            described[name] = {"low": min(choices), "high": max(choices), "log": SCALES.get(name) == "log",
                               "integer": all(isinstance(c, int) for c in choices)}
    return described


def hpo_sections(config: dict[str, Any], seed: int) -> tuple[dict, dict, dict]:
    """The data, model and train sections of hpo's spec that train ``config`` with ``seed``."""
    model, train = dict(MODEL), dict(TRAIN, seed=seed, momentum=0.9)
    for name, value in config.items():
        section, _, field = name.partition(".")
        (model if section == "model" else train)[field] = value
    return dict(DATA), model, train
