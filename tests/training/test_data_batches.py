"""TensorBatches and the data: config keys, without any dataset on disk."""

import pytest
import torch
from pydantic import ValidationError

from hpo.training import DataConfig
from hpo.training.batches import TensorBatches
from hpo.training.data import cache_key, load_splits


def _source(n=10, size=None):
    x = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 3, 4, 4)
    y = torch.arange(n) % 2
    return TensorBatches(x, y, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0), image_size=size), x, y


def test_uint8_normalised_per_batch():
    src, x, y = _source()
    assert src.x.dtype == torch.uint8 and src.x.data_ptr() == x.data_ptr()  # no float copy
    xb, yb = next(src.batches(4))
    expected = (x[:4].float() / 255 - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)) / torch.tensor(
        [0.5, 0.25, 1.0]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(xb, expected)
    assert torch.equal(yb, y[:4]) and xb.dtype == torch.float32
    assert src.labels.device.type == "cpu" and src.labels.dtype == torch.int64


def test_resize_happens_per_batch():
    src, _, _ = _source(size=(9, 7))
    xb, _ = next(src.batches(3))
    assert xb.shape == (3, 3, 9, 7) and src.x.shape[-2:] == (4, 4)
    small, _, _ = _source(size=(2, 2))
    assert next(small.batches(3))[0].shape == (3, 3, 2, 2)


def test_shuffled_batches_cover_the_split_once():
    src, _, y = _source(n=11)
    gen = torch.Generator().manual_seed(3)
    ys = [yb for _, yb in src.batches(5, generator=gen, train=True)]
    assert [len(b) for b in ys] == [5, 5]  # the lone 11th example is dropped for BatchNorm
    ys = torch.cat([yb for _, yb in src.batches(5, generator=torch.Generator().manual_seed(3))])
    assert len(ys) == 11 and torch.equal(ys.sort().values, y.sort().values)


def test_data_config_classes_validation():
    assert DataConfig(classes=3).classes == 3
    assert DataConfig(classes=["cat", 2]).classes == ["cat", 2]
    bad_values = (
        (1, "at least 2 classes"),
        ([3], "at least 2"),
        (["a", "a"], "listed more than once"),
        ([0, -1], "start at 0"),
    )
    for bad, msg in bad_values:
        with pytest.raises(ValidationError, match=msg):
            DataConfig(classes=bad)
    with pytest.raises(ValidationError):
        DataConfig(image_size=2)
    with pytest.raises(ValidationError):
        DataConfig(num_workers=-1)


def test_cache_ignores_only_augmentation():
    a = DataConfig(split_seed=9)
    assert cache_key(a, "cpu") == cache_key(DataConfig(split_seed=9), torch.device("cpu"))
    assert cache_key(a, "cpu") != cache_key(DataConfig(split_seed=9, image_size=16), "cpu")
    assert cache_key(a, "cpu") != cache_key(DataConfig(split_seed=9, num_workers=0), "cpu")
    if "augment" in DataConfig.model_fields:
        other = a.model_copy(update={"augment": ["hflip"]})
        assert cache_key(other, "cpu") == cache_key(a, "cpu")
        assert load_splits(other) is load_splits(a)
