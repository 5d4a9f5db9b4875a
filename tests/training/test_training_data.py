"""Splits of digits: disjoint, stratified, deterministic, cached; the test split stays out of tuning."""

import dataclasses

import numpy as np
import pytest
import torch

from hpo.errors import TrainingError
from hpo.training import DataConfig
from hpo.training.batches import TensorBatches, batch_bounds
from hpo.training.data import Splits, _plan_for, load_splits, load_test_split, plan, raw_key
from hpo.training.datasets import DATASETS


def _indices(cfg: DataConfig):
    p = _plan_for(cfg)
    return tuple(p.splits[s][1] for s in ("train", "val", "test"))


def _all(source, **kw):
    xs, ys = zip(*source.batches(10_000, **kw))
    return torch.cat(xs), torch.cat(ys)


def _raw():
    return DATASETS.get("digits")().parts["train"]


def test_digits_raw():
    raw = DATASETS.get("digits")()
    x = raw.parts["train"].x
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == 16 and raw.scale == 16
    assert raw.class_names == tuple(str(i) for i in range(10))


def test_indices_disjoint_and_complete():
    cfg = DataConfig(val_fraction=0.25, test_fraction=0.15)
    train, val, test = _indices(cfg)
    assert not set(train) & set(val)
    assert not set(train) & set(test)
    assert not set(val) & set(test)
    assert len(train) + len(val) + len(test) == 1797
    assert abs(len(val) - 0.25 * 1797) <= 1  # val_fraction is of the whole dataset
    assert abs(len(test) - 0.15 * 1797) <= 1


def test_train_fraction_keeps_a_stratified_subset_of_train_only():
    full_train, val, test = _indices(DataConfig())
    train, sub_val, sub_test = _indices(DataConfig(train_fraction=0.15))
    assert np.array_equal(val, sub_val) and np.array_equal(test, sub_test)  # untouched
    assert set(train) < set(full_train)
    assert abs(len(train) - 0.15 * len(full_train)) <= 1
    assert (np.bincount(_raw().y[train], minlength=10) > 0).all()  # every class kept
    assert load_splits(DataConfig(train_fraction=0.15)).class_counts["train"] == np.bincount(
        _raw().y[train], minlength=10).tolist()


def test_train_fraction_too_small_for_every_class_says_so():
    with pytest.raises(TrainingError,
                       match=r"cannot split dataset 'digits' into a training subset \(data.train_fraction\) split"):
        _plan_for(DataConfig(train_fraction=0.005))


def test_stratified_every_class_in_every_split():
    y = _raw().y
    overall = np.bincount(y) / len(y)
    for idx in _indices(DataConfig()):
        counts = np.bincount(y[idx], minlength=10)
        assert (counts > 0).all()
        np.testing.assert_allclose(counts / len(idx), overall, atol=0.01)


def test_deterministic_per_seed():
    a = _indices(DataConfig(split_seed=1))
    p = plan.__wrapped__(raw_key(DataConfig()), None, 0.2, 0.2, 1)  # recomputed, not cached
    b = tuple(p.splits[s][1] for s in ("train", "val", "test"))
    c = _indices(DataConfig(split_seed=2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])


def test_tuning_sources_come_from_tuning_indices_only():
    cfg = DataConfig(split_seed=3)
    train, val, test = _indices(cfg)
    s = load_splits(cfg)
    raw = _raw()
    # Nothing a tuning run can reach holds the test images.
    assert {f.name for f in dataclasses.fields(Splits)}.isdisjoint({"test", "test_x", "test_y"})
    assert torch.equal(s.train.labels, torch.from_numpy(raw.y[train]))
    assert torch.equal(s.val.labels, torch.from_numpy(raw.y[val]))
    mean, std = raw.x[train].mean(), raw.x[train].std()
    x, y = _all(s.train)
    assert torch.equal(y, s.train.labels)
    np.testing.assert_allclose(x.numpy(), (raw.x[train] - mean) / std, atol=1e-4)
    x, _ = _all(s.val)
    np.testing.assert_allclose(x.numpy(), (raw.x[val] - mean) / std, atol=1e-4)
    t = load_test_split(cfg)
    assert torch.equal(t.test.labels, torch.from_numpy(raw.y[test]))
    x, _ = _all(t.test)
    np.testing.assert_allclose(x.numpy(), (raw.x[test] - mean) / std, atol=1e-4)
    assert t.class_counts == {"test": np.bincount(raw.y[test], minlength=10).tolist()}


def test_shapes_dtypes_normalisation_and_counts():
    s = load_splits(DataConfig())
    x, y = _all(s.train)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape[1:] == (1, 8, 8) and s.in_shape == (1, 8, 8)
    assert s.num_classes == 10 and len(s.class_names) == 10
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3
    assert abs(s.mean[0] * 16 - 4.88) < 0.1  # statistics are reported on the [0, 1] scale
    assert s.class_counts["train"] == np.bincount(s.train.labels.numpy()).tolist()
    assert sum(s.class_counts["val"]) == len(s.val) and s.skipped == {}


def test_batches_shuffle_and_drop_single_last():
    s = load_splits(DataConfig())
    n = len(s.train)  # 1078 = 2 * 539: a batch size of 539 leaves nothing, 359 leaves one
    assert n % 359 == 1
    gen = torch.Generator().manual_seed(0)
    train_batches = list(s.train.batches(359, generator=gen, train=True))
    assert [len(y) for _, y in train_batches] == [359, 359, 359]
    assert [len(y) for _, y in s.train.batches(359)] == [359, 359, 359, 1]  # eval keeps all
    # Same generator seed -> same order; a permutation of the split.
    a = torch.cat([y for _, y in s.train.batches(64, generator=torch.Generator().manual_seed(1))])
    b = torch.cat([y for _, y in s.train.batches(64, generator=torch.Generator().manual_seed(1))])
    assert torch.equal(a, b) and not torch.equal(a, s.train.labels)
    assert torch.equal(a.sort().values, s.train.labels.sort().values)


def test_batch_bounds():
    assert batch_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert batch_bounds(5, 2, train=True) == [(0, 2), (2, 4)]
    assert batch_bounds(1, 4, train=True) == [(0, 1)]  # a lone batch is kept
    with pytest.raises(ValueError):
        batch_bounds(5, 0)


def test_image_size_resizes_per_batch_and_shares_pixels():
    s8 = load_splits(DataConfig())
    s16 = load_splits(DataConfig(image_size=16))
    assert s16.in_shape == (1, 16, 16)
    x, _ = next(s16.val.batches(7))
    assert x.shape == (7, 1, 16, 16)
    assert isinstance(s16.train, TensorBatches) and s16.train.x is s8.train.x  # stored at 8 px
    assert s16.train.x.shape[-2:] == (8, 8)


def test_cached_per_config_and_device():
    a = load_splits(DataConfig(split_seed=5), "cpu")
    assert load_splits(DataConfig(split_seed=5), torch.device("cpu")) is a
    assert load_splits(DataConfig(split_seed=6), "cpu") is not a


def test_cached_indices_are_read_only():
    train, _, _ = _indices(DataConfig())
    with pytest.raises(ValueError):
        train[0] = 0


def test_split_too_small_for_every_class():
    with pytest.raises(TrainingError, match="cannot split dataset 'digits'"):
        _indices(DataConfig(test_fraction=0.003))
