"""MNIST family and CIFAR through torchvision's own classes, from tiny files in their formats."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from hpo.errors import TrainingError
from hpo.training import DataConfig
from hpo.training.batches import TensorBatches
from hpo.training.data import _plan_for, load_splits, load_test_split

MNIST_DIRS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}


def _idx(path, array, gz=False):
    """An IDX (SN3 "Pascal Vincent") file: magic 0x08 (ubyte) + ndim, big-endian sizes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path += ".gz"
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)


def _labels(n, k, rng):
    y = np.arange(n) % k  # balanced
    rng.shuffle(y)
    return y


def write_mnist(root, cls_dir, n_train=120, n_test=30, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, cls_dir, "raw")
    os.makedirs(raw, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = _labels(n, 10, rng)
        _idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), x, gz)
        _idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), y, gz)
        out[prefix] = (x, y)
    return out


def write_cifar(root, hundred=False, per_batch=24, n_test=40, seed=0):
    """Pickled batches as the official tarballs hold them (Python 2 str keys read as str)."""
    rng = np.random.default_rng(seed)
    k = 100 if hundred else 10
    folder = os.path.join(root, "cifar-100-python" if hundred else "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    label_key = "fine_labels" if hundred else "labels"
    batches = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    n_per = per_batch * (5 if hundred else 1)
    train_x, train_y = [], []
    for name in batches + ["test"]:
        n = n_test if name == "test" else n_per
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = _labels(n, k, rng)
        with open(os.path.join(folder, name if hundred or name != "test" else "test_batch"), "wb") as f:
            pickle.dump({"data": x, label_key: y.tolist(), "batch_label": name}, f)
        if name == "test":
            test = (x.reshape(-1, 3, 32, 32), y)
        else:
            train_x.append(x)
            train_y.append(y)
    names = [f"class{i:02d}" for i in range(k)]
    meta = {"fine_label_names": names, "coarse_label_names": []} if hundred else {"label_names": names}
    with open(os.path.join(folder, "meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f)
    train = (np.concatenate(train_x).reshape(-1, 3, 32, 32), np.concatenate(train_y))
    return {"train": train, "test": test, "names": tuple(names)}


def _gather(source):
    xs, ys = zip(*source.batches(4096))
    return torch.cat(xs), torch.cat(ys)


def _raw_pixels(source):
    """The stored pixels of a TensorBatches, for exact comparisons."""
    assert isinstance(source, TensorBatches)
    return source.x


@pytest.mark.parametrize("name", sorted(MNIST_DIRS))
def test_mnist_family_reads_written_pixels_and_keeps_official_test(tmp_path, name):
    written = write_mnist(str(tmp_path), MNIST_DIRS[name], gz=name == "kmnist")  # .gz unpacked
    cfg = DataConfig(name=name, root=str(tmp_path), val_fraction=0.25)
    s = load_splits(cfg)
    p = _plan_for(cfg)
    assert s.in_shape == (1, 28, 28) and s.num_classes == 10
    assert len(s.train) + len(s.val) == 120 and len(s.val) == 30
    x_train, y_train = written["train"]
    _, train_idx = p.splits["train"]
    _, val_idx = p.splits["val"]
    assert torch.equal(_raw_pixels(s.train)[:, 0], torch.from_numpy(x_train[train_idx]))
    assert torch.equal(s.val.labels, torch.from_numpy(y_train[val_idx]))
    assert _raw_pixels(s.train).dtype == torch.uint8  # stored 4x smaller than float
    assert not set(train_idx) & set(val_idx)
    assert s.class_counts["val"] == [3] * 10  # stratified
    t = load_test_split(cfg)
    assert p.splits["test"][0] == "test"  # the official test file, not carved from train
    assert torch.equal(_raw_pixels(t.test)[:, 0], torch.from_numpy(written["t10k"][0]))
    assert torch.equal(t.test.labels, torch.from_numpy(written["t10k"][1]))
    x, _ = _gather(s.train)  # normalised with the training split's own statistics
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3
    if name == "mnist":
        assert s.class_names == tuple("0123456789")
    if name == "fashion_mnist":
        assert s.class_names[:2] == ("T-shirt/top", "Trouser")


def test_cifar10_reads_batches_splits_and_resizes_per_batch(tmp_path):
    written = write_cifar(str(tmp_path))
    cfg = DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.2, image_size=48)
    s = load_splits(cfg)
    p = _plan_for(cfg)
    assert len(s.train) + len(s.val) == 120 and len(s.val) == 24
    assert s.class_names == written["names"]
    assert s.in_shape == (3, 48, 48)
    stored = _raw_pixels(s.train)
    assert stored.dtype == torch.uint8 and stored.shape[1:] == (3, 32, 32)  # never resized up front
    x, y = next(s.train.batches(16, generator=torch.Generator().manual_seed(0), train=True))
    assert x.shape == (16, 3, 48, 48) and x.dtype == torch.float32 and y.shape == (16,)
    _, train_idx = p.splits["train"]
    assert torch.equal(stored, torch.from_numpy(written["train"][0][train_idx]))
    mean = written["train"][0][train_idx].astype(np.float64).mean(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(s.mean, mean, atol=1e-9)
    t = load_test_split(cfg)
    assert torch.equal(_raw_pixels(t.test), torch.from_numpy(written["test"][0]))
    assert next(t.test.batches(8))[0].shape == (8, 3, 48, 48)


def test_cifar100_subset_first_n_classes(tmp_path):
    write_cifar(str(tmp_path), hundred=True, per_batch=100, n_test=200)
    cfg = DataConfig(name="cifar100", root=str(tmp_path), classes=80, val_fraction=0.3)
    s = load_splits(cfg)
    assert s.num_classes == 80 and s.class_names == tuple(f"class{i:02d}" for i in range(80))
    assert int(s.train.labels.max()) <= 79 and int(s.val.labels.max()) <= 79
    t = load_test_split(cfg)
    assert int(t.test.labels.max()) <= 79 and t.num_classes == 80
    assert len(t.test) == sum(t.class_counts["test"])


def test_classes_by_name_and_index_remap_in_given_order(tmp_path):
    written = write_cifar(str(tmp_path))
    cfg = DataConfig(name="cifar10", root=str(tmp_path), classes=["class07", 2], val_fraction=0.25)
    s = load_splits(cfg)
    assert s.class_names == ("class07", "class02") and s.num_classes == 2
    p = _plan_for(cfg)
    _, idx = p.splits["train"]
    old = written["train"][1][idx]
    assert set(old) == {7, 2}
    assert torch.equal(s.train.labels, torch.from_numpy((old == 2).astype(np.int64)))
    with pytest.raises(TrainingError, match=r"no class named 'class7'; did you mean 'class07'"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path), classes=["class7", 1]))
    with pytest.raises(TrainingError, match="index 12 is out of range"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path), classes=[12, 1]))
    with pytest.raises(TrainingError, match="data.classes is 11 but the dataset has only 10"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path), classes=11))


def test_missing_dataset_names_files_and_folder(tmp_path):
    with pytest.raises(TrainingError) as e:
        load_splits(DataConfig(name="fashion_mnist", root=str(tmp_path / "d")))
    folder = os.path.join(str(tmp_path / "d"), "FashionMNIST", "raw")
    assert str(e.value).startswith(
        "FashionMNIST not found: put train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), "
        f"t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz) into {folder}{os.sep} "
        "or set data.download: true"
    )
    expected = r"CIFAR100 not found: put train, test, meta into .*cifar-100-python"
    with pytest.raises(TrainingError, match=expected):
        load_splits(DataConfig(name="cifar100", root=str(tmp_path)))


def test_partly_missing_lists_what_is_missing(tmp_path):
    write_cifar(str(tmp_path))
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(TrainingError, match=r"\(data_batch_3 missing\)"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path)))


def test_corrupt_file_is_a_training_error(tmp_path):
    write_cifar(str(tmp_path))
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"\x80\x04garbage")
    with pytest.raises(TrainingError, match="CIFAR10 in .* looks corrupt"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path)))


def test_root_defaults_to_env_then_data(tmp_path, monkeypatch):
    write_mnist(str(tmp_path / "env"), "MNIST", n_train=60, n_test=20)
    monkeypatch.setenv("HPO_DATA_ROOT", str(tmp_path / "env"))
    assert len(load_splits(DataConfig(name="mnist")).val) == 12
    monkeypatch.delenv("HPO_DATA_ROOT")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match=f"into {os.path.join('data', 'MNIST', 'raw')}"):
        load_splits(DataConfig(name="mnist"))


def test_failed_download_says_why_and_where(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(TrainingError) as e:
        load_splits(DataConfig(name="kmnist", root=str(tmp_path), download=True))
    assert str(e.value).startswith(
        "could not download KMNIST (Error downloading train-images-idx3-ubyte.gz: no network); "
        "put train-images-idx3-ubyte(.gz)"
    )
    assert "set data.download" not in str(e.value)
