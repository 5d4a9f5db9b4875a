"""The on-disk cache of prepared tuning splits: the same splits as computed fresh, one entry
per data config, stale and unreadable entries replaced, atomic writes, and off when asked."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from hpo.spec import load_spec
from hpo.training import DataConfig
from hpo.training import cache as cache_module
from hpo.training import data as data_module
from hpo.training.cache import CIFAR_FOLDERS, cache_dir
from hpo.training.data import load_splits
from hpo.worker.loop import _load_fixed_dataset
from tests.specs import write_spec
from tests.training.test_data_torchvision import write_cifar, write_mnist

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty cache folder, and a process that has prepared nothing yet."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("HPO_CACHE_DIR", str(folder))
    fresh_process(monkeypatch)
    return folder / "splits"


def fresh_process(monkeypatch):
    """Forget what this process prepared, as a newly started worker would not have it."""
    monkeypatch.setattr(data_module, "_PREPARED", {})
    monkeypatch.setattr(data_module, "_SPLITS", {})
    data_module._raw.cache_clear()  # the source's files are read again, too
    data_module.plan.cache_clear()


def no_fresh_split(monkeypatch):
    """Fail if the splits are computed rather than read from the cache."""
    def computed(*args, **kwargs):
        raise AssertionError("the splits were computed, not read from the cache")

    monkeypatch.setattr(data_module, "plan", computed)


def assert_same_splits(a, b):
    for split in ("train", "val"):
        sa, sb = getattr(a, split), getattr(b, split)
        assert torch.equal(sa.x, sb.x) and sa.x.dtype == sb.x.dtype
        assert torch.equal(sa.y, sb.y) and torch.equal(sa.labels, sb.labels)
        assert sa.image_size == sb.image_size
        xa, ya = next(iter(sa.batches(10_000)))
        xb, yb = next(iter(sb.batches(10_000)))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)  # normalised alike
    for field in ("in_shape", "num_classes", "class_names", "mean", "std", "class_counts", "skipped"):
        assert getattr(a, field) == getattr(b, field), field


def cold_then_warm(cfg, monkeypatch):
    """(computed without the cache, written to it, read back from it) in fresh processes."""
    fresh = load_splits(cfg)
    fresh_process(monkeypatch)
    written = load_splits(cfg, disk_cache=True)
    fresh_process(monkeypatch)
    with monkeypatch.context() as m:
        no_fresh_split(m)
        read = load_splits(cfg, disk_cache=True)
    return fresh, written, read


@pytest.mark.parametrize("cfg", [
    DataConfig(),
    DataConfig(val_fraction=0.3, test_fraction=0.1, split_seed=7, classes=["3", 1, "9"], train_fraction=0.5),
], ids=["defaults", "subset"])
def test_digits_read_back_equal_the_fresh_splits(cache, monkeypatch, cfg):
    fresh, written, read = cold_then_warm(cfg, monkeypatch)
    assert_same_splits(fresh, written)
    assert_same_splits(fresh, read)
    assert len(list(cache.glob("*.npz"))) == 1


def test_torchvision_splits_read_back_equal_and_follow_their_files(cache, tmp_path, monkeypatch):
    write_mnist(str(tmp_path), "FashionMNIST", gz=True)
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), val_fraction=0.25)
    fresh, _, read = cold_then_warm(cfg, monkeypatch)
    assert_same_splits(fresh, read)
    [entry] = cache.glob("*.npz")
    # New files under the same root: the entry no longer matches, and is replaced, not added to.
    write_mnist(str(tmp_path), "FashionMNIST", seed=1)
    fresh_process(monkeypatch)
    changed = load_splits(cfg, disk_cache=True)
    assert not torch.equal(changed.val.x, read.val.x)
    assert list(cache.glob("*.npz")) == [entry]
    fresh_process(monkeypatch)
    assert_same_splits(changed, load_splits(cfg))  # what the new files give without the cache


def test_cifar_read_back_equal_the_fresh_splits(cache, tmp_path, monkeypatch):
    write_cifar(str(tmp_path))
    fresh, _, read = cold_then_warm(DataConfig(name="cifar10", root=str(tmp_path), image_size=16), monkeypatch)
    assert_same_splits(fresh, read)


def test_cifar_folders_are_torchvisions():
    assert {"cifar10": tvd.CIFAR10.base_folder, "cifar100": tvd.CIFAR100.base_folder} == CIFAR_FOLDERS


def test_one_entry_per_split_config_shared_across_sizes_and_augmentation(cache, monkeypatch):
    load_splits(DataConfig(), disk_cache=True)
    fresh_process(monkeypatch)
    load_splits(DataConfig(image_size=16, augment="light", num_workers=0), disk_cache=True)
    assert len(list(cache.glob("*.npz"))) == 1
    fresh_process(monkeypatch)
    load_splits(DataConfig(split_seed=1), disk_cache=True)
    assert len(list(cache.glob("*.npz"))) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "foreign npz"])
def test_an_unreadable_entry_is_ignored_and_rewritten(cache, monkeypatch, caplog, damage):
    cfg = DataConfig()
    fresh = load_splits(cfg, disk_cache=True)
    [entry] = cache.glob("*.npz")
    good = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"not a cache entry" * 100)
    elif damage == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        np.savez(entry, train_x=np.zeros(3))  # an npz, but not one of ours
    fresh_process(monkeypatch)
    again = load_splits(cfg, disk_cache=True)
    assert_same_splits(fresh, again)
    assert "ignoring unreadable dataset cache" in caplog.text
    fresh_process(monkeypatch)
    no_fresh_split(monkeypatch)
    assert_same_splits(fresh, load_splits(cfg, disk_cache=True))  # rewritten, readable again


def test_an_entry_of_other_code_or_versions_is_recomputed(cache, monkeypatch):
    cfg = DataConfig()
    load_splits(cfg, disk_cache=True)
    fresh_process(monkeypatch)
    monkeypatch.setattr(cache_module, "FORMAT_VERSION", cache_module.FORMAT_VERSION + 1)
    computed = []
    real_plan = data_module.plan
    monkeypatch.setattr(data_module, "plan", lambda *a: computed.append(a) or real_plan(*a))
    load_splits(cfg, disk_cache=True)
    assert len(computed) == 1
    assert len(list(cache.glob("*.npz"))) == 1


def test_a_failed_write_leaves_the_old_entry_and_no_temporary_file(cache, monkeypatch, caplog):
    cfg = DataConfig()
    load_splits(cfg, disk_cache=True)
    [entry] = cache.glob("*.npz")
    before = entry.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module, "FORMAT_VERSION", cache_module.FORMAT_VERSION + 1)  # stale: rewrite
    monkeypatch.setattr(np, "savez", disk_full)
    fresh_process(monkeypatch)
    assert len(load_splits(cfg, disk_cache=True).train) == len(load_splits(cfg).train)  # still trains
    assert "cannot write the dataset cache" in caplog.text
    assert os.listdir(cache) == [entry.name] and entry.read_bytes() == before


def test_off_when_the_variable_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_CACHE_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    fresh_process(monkeypatch)
    assert cache_dir() is None
    load_splits(DataConfig(), disk_cache=True)
    assert not list(tmp_path.rglob("*.npz"))


def test_not_written_unless_asked(cache, monkeypatch):
    load_splits(DataConfig())  # a trial's own data config (searched data keys): not cached
    assert not cache.exists()


def test_default_folder_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("HPO_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / ".cache" / "hpo"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "hpo"
    monkeypatch.setenv("HPO_CACHE_DIR", "~/mine")
    assert cache_dir() == tmp_path / "mine"


def test_a_worker_caches_its_fixed_dataset_only(cache, tmp_path, monkeypatch):
    spec = load_spec(ROOT / "search_spaces" / "digits_cnn.yaml")
    assert _load_fixed_dataset(spec, "cpu") == len(load_splits(spec.data).train)
    assert len(list(cache.glob("digits-*.npz"))) == 1
    fresh_process(monkeypatch)
    searched = load_spec(write_spec(tmp_path, "searched", search={"data.val_fraction": "{low: 0.1, high: 0.3}"}))
    _load_fixed_dataset(searched, "cpu")  # each trial's split differs: nothing to cache
    assert len(list(cache.glob("*.npz"))) == 1


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_warm_start_reads_the_splits_without_scikit_learn(cache):
    """What the cache is for: a second worker on the same data does not import scikit-learn
    (and scipy with it) to load digits and split them."""
    script = (
        "import sys; from hpo.training import DataConfig; from hpo.training.data import load_splits; "
        "s = load_splits(DataConfig(), disk_cache=True); "
        "print(len(s.train), 'sklearn' in sys.modules, 'scipy' in sys.modules)"
    )
    env = {**os.environ, "HPO_THREADS": "1"}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                           check=True, cwd=ROOT).stdout.split() for _ in range(2)]
    assert runs[0] == ["1078", "True", "True"]  # cold: loaded and split with scikit-learn
    assert runs[1] == ["1078", "False", "False"]
