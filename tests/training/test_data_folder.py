"""image_folder: corrupt files skipped and listed, counts, stratified or given splits, both paths."""

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from hpo.errors import TrainingError
from hpo.training import DataConfig
from hpo.training import folder as folder_mod
from hpo.training.batches import LoaderBatches, TensorBatches
from hpo.training.data import _plan_for, load_splits, load_test_split
from hpo.training.folder import decode_image

COUNTS = {"ant": 20, "bee": 20, "cat": 10}  # imbalanced


def _truncate(path: str) -> None:
    """Cut the file to its first half."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _image(path, rng, gray=False, size=None):
    w, h = size or (int(rng.integers(24, 48)), int(rng.integers(24, 48)))
    shape = (h, w) if gray else (h, w, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def make_folder(root, counts=COUNTS, gray=False, seed=0, corrupt=True):
    """PNG and JPEG files of varied sizes; with ``corrupt``, three broken ones and a .txt."""
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(n):
            ext = "png" if i % 2 else "jpg"
            _image(os.path.join(root, name, f"{i:03d}.{ext}"), rng, gray)
    bad = []
    if corrupt:
        with open(os.path.join(root, "ant", "notes.txt"), "w") as f:
            f.write("not an image: ignored, neither counted nor skipped")
        text = os.path.join(root, "ant", "text.png")
        with open(text, "w") as f:
            f.write("this is not a png")
        trunc_png = os.path.join(root, "bee", "trunc.png")
        _image(trunc_png, rng, gray, size=(40, 40))
        _truncate(trunc_png)
        trunc_jpg = os.path.join(root, "cat", "trunc.jpg")  # passes verify(), fails to decode
        _image(trunc_jpg, rng, gray, size=(40, 40))
        _truncate(trunc_jpg)
        bad = [text, trunc_png, trunc_jpg]
    return bad


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("flat"))
    return root, make_folder(root)


def _gather(source):
    xs, ys = zip(*source.batches(1000))
    return torch.cat(xs), torch.cat(ys)


def _cfg(path, **kw):
    return DataConfig(name="image_folder", path=path, **{"val_fraction": 0.2, "test_fraction": 0.2, **kw})


def test_corrupt_files_skipped_listed_and_logged(flat, caplog):
    root, bad = flat
    with caplog.at_level(logging.WARNING):
        s = load_splits(_cfg(root, image_size=16, split_seed=11))
    assert sorted(s.skipped) == sorted(bad)
    assert "UnidentifiedImageError" in s.skipped[bad[0]]
    assert "truncated" in s.skipped[bad[2]]
    assert "skipped 3 unreadable image file(s)" in caplog.text and bad[2] in caplog.text


def test_in_memory_counts_stratified_split_and_uint8(flat):
    root, _ = flat
    cfg = _cfg(root, image_size=16)
    s = load_splits(cfg)
    t = load_test_split(cfg)
    assert s.class_names == ("ant", "bee", "cat")
    assert isinstance(s.train, TensorBatches) and s.train.x.dtype == torch.uint8
    assert s.in_shape == (3, 16, 16) and s.train.x.shape[1:] == (3, 16, 16)
    counts = zip(s.class_counts["train"], s.class_counts["val"], t.class_counts["test"])
    total = [a + b + c for a, b, c in counts]
    assert total == [20, 20, 10]  # the corrupt files are gone, the text file was never counted
    assert t.class_counts["test"] == [4, 4, 2] and s.class_counts["val"] == [4, 4, 2]  # stratified
    p = _plan_for(cfg)
    idx = [set(p.splits[k][1]) for k in ("train", "val", "test")]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
    x, y = _gather(s.train)
    assert x.shape == (len(s.train), 3, 16, 16) and torch.equal(y, s.train.labels)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-2


def test_decoded_pixels_match_the_file(flat):
    root, _ = flat
    path = os.path.join(root, "bee", "001.png")
    a = decode_image(path, 16, 3)
    assert a.shape == (3, 16, 16) and a.dtype == np.uint8
    expected = np.asarray(Image.open(path).convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal(a, expected.transpose(2, 0, 1))


def test_streamed_loader_matches_in_memory(flat):
    root, _ = flat
    mem = load_splits(_cfg(root, image_size=16, in_memory=True))
    disk = load_splits(_cfg(root, image_size=16, in_memory=False, num_workers=0))
    assert isinstance(disk.train, LoaderBatches) and disk.in_shape == (3, 16, 16)
    assert torch.equal(disk.train.labels, mem.train.labels)
    np.testing.assert_allclose(disk.mean, mem.mean, rtol=1e-9)
    np.testing.assert_allclose(disk.std, mem.std, rtol=1e-9)
    xd, yd = _gather(disk.val)
    xm, ym = _gather(mem.val)
    assert torch.equal(yd, ym)
    torch.testing.assert_close(xd, xm)
    td = load_test_split(_cfg(root, image_size=16, in_memory=False))
    tm = load_test_split(_cfg(root, image_size=16))
    assert torch.equal(td.test.labels, tm.test.labels) and isinstance(td.test, LoaderBatches)


def test_streamed_with_worker_processes_shuffles_and_drops_single(flat):
    root, _ = flat
    s = load_splits(_cfg(root, image_size=16, in_memory=False, num_workers=2))
    n = len(s.train)
    bs = n - 1  # leaves a last batch of one example
    out = list(s.train.batches(bs, generator=torch.Generator().manual_seed(0), train=True))
    assert [len(y) for _, y in out] == [bs]
    x, y = out[0]
    assert x.shape == (bs, 3, 16, 16) and x.dtype == torch.float32
    assert not torch.equal(y, s.train.labels[:bs])  # shuffled
    assert len([y for _, y in s.train.batches(bs)]) == 2  # evaluation keeps every example


def test_auto_mode_streams_big_folders(flat, monkeypatch):
    root, _ = flat
    assert isinstance(load_splits(_cfg(root, image_size=20)).train, TensorBatches)
    monkeypatch.setattr(folder_mod, "MAX_IN_MEMORY_BYTES", 1000)
    s = load_splits(_cfg(root, image_size=24, num_workers=0))
    assert isinstance(s.train, LoaderBatches)
    assert next(s.val.batches(4))[0].shape == (4, 3, 24, 24)


def test_default_image_size_is_64(flat):
    root, _ = flat
    s = load_splits(_cfg(root))
    assert s.in_shape == (3, 64, 64) and next(s.val.batches(2))[0].shape == (2, 3, 64, 64)


def test_pre_split_folder_used_as_given(tmp_path):
    rng = np.random.default_rng(1)
    written = {}
    for split, n in (("train", 12), ("val", 3), ("test", 4)):
        for cls in ("x", "y"):
            os.makedirs(tmp_path / split / cls)
            for i in range(n):
                _image(tmp_path / split / cls / f"{i}.png", rng)
        written[split] = 2 * n
    cfg = _cfg(str(tmp_path), image_size=8)
    s, t = load_splits(cfg), load_test_split(cfg)
    assert (len(s.train), len(s.val), len(t.test)) == (24, 6, 8)  # val_fraction ignored
    assert s.class_counts == {"train": [12, 12], "val": [3, 3]} and t.class_counts == {"test": [4, 4]}
    p = _plan_for(cfg)
    assert [p.splits[k][0] for k in ("train", "val", "test")] == ["train", "val", "test"]


def test_pre_split_without_val_carves_it_from_train(tmp_path):
    rng = np.random.default_rng(2)
    for split, n in (("train", 10), ("test", 2)):
        for cls in ("x", "y"):
            os.makedirs(tmp_path / split / cls)
            for i in range(n):
                _image(tmp_path / split / cls / f"{i}.png", rng)
    cfg = _cfg(str(tmp_path), image_size=8, val_fraction=0.2)
    s, t = load_splits(cfg), load_test_split(cfg)
    assert (len(s.train), len(s.val), len(t.test)) == (16, 4, 4)


def test_grayscale_folder_has_one_channel(tmp_path):
    make_folder(str(tmp_path), counts={"a": 6, "b": 6}, gray=True, corrupt=False)
    s = load_splits(_cfg(str(tmp_path), image_size=8, val_fraction=0.25, test_fraction=0.25))
    assert s.in_shape == (1, 8, 8) and len(s.mean) == 1


def test_folder_layout_errors(tmp_path):
    with pytest.raises(TrainingError, match="is not a directory"):
        load_splits(_cfg(str(tmp_path / "nope")))
    os.makedirs(tmp_path / "one" / "only")
    with pytest.raises(TrainingError, match="holds 1 class folder"):
        load_splits(_cfg(str(tmp_path / "one")))
    os.makedirs(tmp_path / "mixed" / "train" / "a")
    os.makedirs(tmp_path / "mixed" / "dogs")
    with pytest.raises(TrainingError, match=r"mixes split folders .* \(dogs\)"):
        load_splits(_cfg(str(tmp_path / "mixed")))
    os.makedirs(tmp_path / "empty" / "a")
    os.makedirs(tmp_path / "empty" / "b")
    _image(tmp_path / "empty" / "a" / "0.png", np.random.default_rng(0))
    with pytest.raises(TrainingError, match="empty/b holds no images"):
        load_splits(_cfg(str(tmp_path / "empty")))


def test_path_is_required_and_only_for_folders():
    with pytest.raises(ValueError, match="image_folder needs path"):
        DataConfig(name="image_folder")
    with pytest.raises(ValueError, match="path is only used by name: image_folder"):
        DataConfig(name="digits", path="x")
