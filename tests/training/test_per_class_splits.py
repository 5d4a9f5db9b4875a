"""``data.val_per_class`` and ``data.test_per_class``: exact counts per class, stratified and
seeded; one clear error when a class is too small; validated in the spec; keyed in the cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hpo.errors import TrainingError
from hpo.spec.trial_config import TrialConfig
from hpo.spec.validate import collect_problems
from hpo.training import DataConfig
from hpo.training import data as data_module
from hpo.training.data import _plan_args, _plan_for, load_splits, load_test_split
from hpo.training.datasets import DATASETS
from tests.training.test_data_cache import assert_same_splits, cache, cold_then_warm  # noqa: F401
from tests.training.test_data_folder import make_folder
from tests.training.test_data_torchvision import write_mnist

ROOT = Path(__file__).resolve().parents[2]
DIGITS_PER_CLASS = np.bincount(DATASETS.get("digits")().parts["train"].y).tolist()  # 174..183
FOLDER = {"ant": 20, "bee": 20, "cat": 10}  # imbalanced


def _counts(cfg: DataConfig) -> dict[str, list[int]]:
    p = _plan_for(cfg)
    return {s: p.class_counts(s) for s in ("train", "val", "test")}


def _indices(cfg: DataConfig) -> dict[str, np.ndarray]:
    return {s: idx for s, (_, idx) in _plan_for(cfg).splits.items()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("imbalanced"))
    make_folder(root, counts=FOLDER, corrupt=False)
    return root


def _folder_cfg(path: str, **kw) -> DataConfig:
    return DataConfig(name="image_folder", path=path, image_size=8, **kw)


# -- exact counts ------------------------------------------------------------------------


def test_digits_exact_counts_per_class_in_val_and_test():
    cfg = DataConfig(val_per_class=20, test_per_class=15)
    counts = _counts(cfg)
    assert counts["val"] == [20] * 10 and counts["test"] == [15] * 10
    assert counts["train"] == [n - 35 for n in DIGITS_PER_CLASS]
    # What the trial records (Splits.class_counts) and the test split say the same.
    s = load_splits(cfg)
    assert s.class_counts == {"train": counts["train"], "val": [20] * 10}
    assert load_test_split(cfg).class_counts == {"test": [15] * 10}
    assert np.bincount(s.val.labels.numpy()).tolist() == [20] * 10


def test_imbalanced_folder_exact_counts_per_class(folder):
    cfg = _folder_cfg(folder, val_per_class=3, test_per_class=4)
    s, t = load_splits(cfg), load_test_split(cfg)
    assert s.class_names == ("ant", "bee", "cat")
    assert s.class_counts == {"train": [13, 13, 3], "val": [3, 3, 3]}
    assert t.class_counts == {"test": [4, 4, 4]}


@pytest.mark.parametrize("cfg", [
    DataConfig(val_per_class=20, test_per_class=15),
    DataConfig(val_per_class=20, test_fraction=0.1),
    DataConfig(val_fraction=0.1, test_per_class=15, train_fraction=0.5),
], ids=["both per class", "val per class", "test per class"])
def test_splits_are_disjoint_and_cover_the_dataset(cfg):
    idx = _indices(cfg)
    train, val, test = (set(idx[s].tolist()) for s in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    if cfg.train_fraction == 1:
        assert train | val | test == set(range(1797))


def test_a_count_per_class_and_a_fraction_of_the_other_split_mix():
    counts = _counts(DataConfig(val_per_class=20, test_fraction=0.1))
    assert counts["val"] == [20] * 10 and abs(sum(counts["test"]) - 180) <= 1
    counts = _counts(DataConfig(val_fraction=0.1, test_per_class=15))
    assert counts["test"] == [15] * 10 and abs(sum(counts["val"]) - 180) <= 1  # of the whole pool


def test_classes_subset_counts_per_kept_class():
    counts = _counts(DataConfig(classes=["7", "2"], val_per_class=30, test_per_class=40))
    assert counts["val"] == [30, 30] and counts["test"] == [40, 40]


def test_fashion_mnist_validation_per_class_of_the_official_training_set(tmp_path):
    write_mnist(str(tmp_path), "FashionMNIST")  # 12 training images per class, 30 test images
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), val_per_class=5)
    counts = _counts(cfg)
    assert counts["val"] == [5] * 10 and counts["train"] == [7] * 10
    assert _plan_for(cfg).splits["test"][0] == "test" and sum(counts["test"]) == 30  # official, whole


# -- seeds -------------------------------------------------------------------------------


def _digest(idx: dict[str, np.ndarray]) -> list[list[int]]:
    return [idx[s].tolist() for s in ("train", "val", "test")]


def test_same_seed_same_split_another_seed_another():
    a = _digest(_indices(DataConfig(val_per_class=20, test_per_class=15, split_seed=4)))
    data_module.plan.cache_clear()  # recomputed, not the cached plan
    b = _digest(_indices(DataConfig(val_per_class=20, test_per_class=15, split_seed=4)))
    c = _digest(_indices(DataConfig(val_per_class=20, test_per_class=15, split_seed=5)))
    assert a == b
    assert a[1] != c[1] and a[2] != c[2]


@pytest.mark.subprocess
@pytest.mark.slow
def test_same_seed_same_split_in_another_process():
    """numpy's seeded generator, not Python's hash seed or anything else of the process."""
    script = (
        "import json; from hpo.training import DataConfig; from hpo.training.data import _plan_for; "
        "p = _plan_for(DataConfig(val_per_class=20, test_per_class=15, split_seed=4)); "
        "print(json.dumps([p.splits[s][1].tolist() for s in ('train', 'val', 'test')]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "HPO_CACHE_DIR": "", "PYTHONHASHSEED": "123"})
    assert json.loads(out.stdout) == _digest(_indices(DataConfig(val_per_class=20, test_per_class=15,
                                                                 split_seed=4)))


# -- too small ---------------------------------------------------------------------------


def test_a_class_too_small_is_one_line_naming_it(folder):
    with pytest.raises(TrainingError) as caught:
        _plan_for(_folder_cfg(folder, val_per_class=5, test_per_class=5))
    assert str(caught.value) == (
        "dataset 'image_folder': class 'cat' has 10 images, too few for "
        "data.test_per_class: 5 + data.val_per_class: 5 + 1 to train (needs 11)"
    )


def test_too_small_for_validation_alone(folder):
    with pytest.raises(TrainingError) as caught:
        _plan_for(_folder_cfg(folder, val_per_class=10, test_fraction=0.2))
    assert str(caught.value) == (
        "dataset 'image_folder': class 'cat' has 8 images left after data.test_fraction, too few for "
        "data.val_per_class: 10 + 1 to train (needs 11)"
    )


def test_several_classes_too_small_name_the_smallest():
    with pytest.raises(TrainingError) as caught:
        _plan_for(DataConfig(val_per_class=100, test_per_class=80))
    smallest = int(np.argmin(DIGITS_PER_CLASS))
    assert str(caught.value) == (
        f"dataset 'digits': class '{smallest}' has {min(DIGITS_PER_CLASS)} images, too few for "
        "data.test_per_class: 80 + data.val_per_class: 100 + 1 to train (needs 181) "
        f"({sum(n < 181 for n in DIGITS_PER_CLASS) - 1} more classes too small)"
    )


# -- through a worker --------------------------------------------------------------------

WORKER_SPEC = """\
name: {name}
budget: {{n_trials: 1}}
sampler: {{name: random, seed: 0}}
pruner: {{name: none}}
data: {data}
model: {{name: mlp, n_layers: 1, width: 16}}
train: {{epochs: 1, batch_size: 128}}
"""


def _worker(tmp_path, monkeypatch, name: str, data: str):
    from click.testing import CliRunner

    from hpo.cli.main import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    (tmp_path / f"{name}.yaml").write_text(WORKER_SPEC.format(name=name, data=data))
    created = CliRunner().invoke(cli, ["study", "create", f"{name}.yaml"])
    assert created.exit_code == 0, created.output
    return CliRunner().invoke(cli, ["worker", name])


def test_a_trial_records_the_counts_per_class(tmp_path, monkeypatch):
    from tests.specs import trials_of

    result = _worker(tmp_path, monkeypatch, "counts", "{name: digits, val_per_class: 20, test_per_class: 15}")
    assert result.exit_code == 0, result.output
    [trial] = trials_of("counts")
    assert trial.user_attrs["data"]["class_counts"] == {"train": [n - 35 for n in DIGITS_PER_CLASS],
                                                        "val": [20] * 10}
    recorded = trial.user_attrs["config"]["data"]
    assert (recorded["val_per_class"], recorded["val_fraction"], recorded["test_per_class"]) == (20, None, 15)


def test_a_worker_says_which_class_is_too_small_in_one_line(tmp_path, monkeypatch, folder):
    result = _worker(tmp_path, monkeypatch, "small",
                     f"{{name: image_folder, path: {folder}, image_size: 8, val_per_class: 5, test_per_class: 5}}")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (  # after the line naming the embedded storage
        "Error: dataset 'image_folder': class 'cat' has 10 images, too few for "
        "data.test_per_class: 5 + data.val_per_class: 5 + 1 to train (needs 11)")


# -- datasets with their own test (or validation) split ----------------------------------


def test_test_per_class_of_a_torchvision_dataset_is_a_spec_error():
    problems = collect_problems({"name": "x", "model": {"name": "mlp"},
                                 "data": {"name": "fashion_mnist", "test_per_class": 50}})
    assert [p.format(None) for p in problems] == [
        "data.test_per_class: fashion_mnist has an official test set, which is used whole; "
        "test_per_class is for datasets without one (digits, image folders without test/) (got 50)"
    ]


def test_test_per_class_of_a_pre_split_folder_is_an_error(tmp_path):
    for split in ("train", "test"):
        make_folder(str(tmp_path / split), counts={"x": 6, "y": 6}, corrupt=False)
    with pytest.raises(TrainingError) as caught:
        _plan_for(_folder_cfg(str(tmp_path), test_per_class=2))
    assert str(caught.value) == (
        "data.test_per_class: dataset 'image_folder' has its own test split (12 images), "
        "which is used whole; test_per_class is for datasets without one"
    )
    assert _counts(_folder_cfg(str(tmp_path), val_per_class=2))["val"] == [2, 2]  # carved from train/


def test_val_per_class_of_a_folder_with_val_is_an_error(tmp_path):
    for split in ("train", "val"):
        make_folder(str(tmp_path / split), counts={"x": 6, "y": 6}, corrupt=False)
    with pytest.raises(TrainingError, match=r"^data.val_per_class: dataset 'image_folder' has its own "
                                            r"validation split \(12 images\), which is used whole"):
        _plan_for(_folder_cfg(str(tmp_path), val_per_class=2))


# -- the spec ----------------------------------------------------------------------------


def _data_problems(data: dict) -> list[str]:
    problems = collect_problems({"name": "x", "model": {"name": "mlp"}, "data": data})
    return [p.format(None) for p in problems]


@pytest.mark.parametrize(("data", "expected"), [
    ({"val_per_class": 0}, "data.val_per_class: out of range (got 0; expected a value >= 1)"),
    ({"test_per_class": -3}, "data.test_per_class: out of range (got -3; expected a value >= 1)"),
    ({"val_per_class": 2.5}, "data.val_per_class: wrong type (got 2.5; expected an integer)"),
    ({"val_per_class": 50, "val_fraction": 0.1},
     "data.val_per_class: give either val_per_class or val_fraction (0.1), not both (got 50)"),
    ({"test_per_class": 50, "test_fraction": 0.2},
     "data.test_per_class: give either test_per_class or test_fraction (0.2), not both (got 50)"),
])
def test_spec_errors(data, expected):
    assert _data_problems(data) == [expected]


def test_spec_accepts_counts_and_the_other_splits_fraction():
    assert _data_problems({"val_per_class": 50, "test_per_class": 50}) == []
    assert _data_problems({"val_per_class": 50, "test_fraction": 0.3}) == []
    cfg = DataConfig(val_per_class=50)
    assert (cfg.val_fraction, cfg.val_per_class, cfg.test_fraction, cfg.test_per_class) == (None, 50, 0.2, None)
    assert DataConfig().val_fraction == 0.2 and DataConfig(val_fraction=None).val_fraction == 0.2


def test_a_trials_recorded_config_reads_back():
    """A trial records its config (model_dump) and ``hpo retrain`` validates it again."""
    sections = {"data": DataConfig(val_per_class=5, test_per_class=7).model_dump(mode="json"),
                "model": {"name": "mlp"}, "train": {}}
    again = TrialConfig.from_json(sections).data
    assert (again.val_per_class, again.test_per_class, again.val_fraction, again.test_fraction) == (5, 7, None, None)


# -- the cache ---------------------------------------------------------------------------


def test_cache_key_tells_per_class_from_fraction_splits(cache):  # noqa: F811
    entries = {data_module._disk_entry(_plan_args(DataConfig(**kw))).path for kw in (
        {}, {"val_per_class": 20}, {"val_per_class": 21}, {"test_per_class": 20},
        {"val_per_class": 20, "test_per_class": 20},
    )}
    assert len(entries) == 5


def test_per_class_splits_read_back_from_the_disk_cache(cache, monkeypatch):  # noqa: F811
    cfg = DataConfig(val_per_class=20, test_per_class=15, split_seed=2)
    fresh, written, read = cold_then_warm(cfg, monkeypatch)
    assert_same_splits(fresh, read)
    assert read.class_counts["val"] == [20] * 10
    fraction = load_splits(DataConfig(split_seed=2), disk_cache=True)
    assert not torch.equal(fraction.val.y, read.val.y)
    assert len(list(cache.glob("*.npz"))) == 2
