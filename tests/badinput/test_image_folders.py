"""Bad image folders (``data.name: image_folder``): symlink loops and duplicate links, empty
folders, a single class, corrupt files, files where folders are expected, decompression bombs.

A folder hpo cannot train on is one ``TrainingError`` (one ``Error:`` line in the CLI, a failed
trial with that reason in a worker); bad files inside a usable folder are the documented safe
behaviour: skipped, each with its reason, and logged. Loading never changes the folder.
"""

from __future__ import annotations

import logging
import os
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpo.errors import TrainingError
from hpo.training import DataConfig
from hpo.training.data import load_splits
from tests.badinput import snapshot, within_bounds

PER_CLASS = 12


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)


def _classes(root: Path, names: tuple[str, ...] = ("a", "b"), n: int = PER_CLASS) -> Path:
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(n):
            _png(root / name / f"{i:02d}.png", seed=100 * c + i)
    return root


def _load(root: Path, **options):
    """``load_splits`` on ``root``, bounded, and the folder unchanged afterwards."""
    cfg = DataConfig(name="image_folder", path=str(root), image_size=8,
                     **{"val_fraction": 0.25, "test_fraction": 0.25, **options})
    before = snapshot(root)
    try:
        with within_bounds(seconds=60, megabytes=200):
            return load_splits(cfg)
    finally:
        assert snapshot(root) == before


def _total(splits) -> int:
    return sum(sum(counts) for counts in splits.class_counts.values())


def _counted_with_test(root: Path) -> int:
    """Images in train + val plus the test split that load_splits holds back."""
    from hpo.training.data import _plan_for

    cfg = DataConfig(name="image_folder", path=str(root), image_size=8, val_fraction=0.25, test_fraction=0.25)
    plan = _plan_for(cfg)
    return sum(len(indices) for _, indices in plan.splits.values())


# -- links ------------------------------------------------------------------------------


def test_a_symlink_loop_counts_each_file_once(tmp_path, caplog):
    root = _classes(tmp_path / "data")
    os.symlink(".", root / "a" / "loop")  # a/loop -> a: an endless tree under os.walk
    with caplog.at_level(logging.WARNING, logger="hpo.training.folder"):
        splits = _load(root)
    assert _counted_with_test(root) == 2 * PER_CLASS  # not 403
    assert splits.skipped == {}
    assert f"{root / 'a' / 'loop'} (same as {root / 'a'})" in caplog.text
    assert "left out 1 path(s) that lead to files or folders already listed" in caplog.text


def test_a_link_back_to_the_root_does_not_mix_classes(tmp_path, caplog):
    root = _classes(tmp_path / "data")
    os.symlink("..", root / "a" / "up")  # a/up -> data: would list b's images as a's
    with caplog.at_level(logging.WARNING, logger="hpo.training.folder"):
        _load(root)
    assert _counted_with_test(root) == 2 * PER_CLASS
    assert f"{root / 'a' / 'up'} (same as {root})" in caplog.text


def test_a_class_linked_to_another_is_not_counted_twice(tmp_path):
    root = _classes(tmp_path / "data")
    os.symlink("a", root / "c")  # class c -> class a: the same images under two labels
    with pytest.raises(TrainingError, match=r"class folder .*/c holds no images of its own "
                       r"\(it leads to .*/a, already listed\)"):
        _load(root)


def test_a_validation_split_linked_to_train_does_not_leak(tmp_path, caplog):
    root = tmp_path / "data"
    _classes(root / "train")
    os.symlink("train", root / "val")  # val -> train: every validation image a training one
    with pytest.raises(TrainingError, match=r"/val holds only images already listed .*/train"):
        _load(root)


def test_single_linked_images_are_counted_once(tmp_path, caplog):
    root = _classes(tmp_path / "data")
    os.symlink(root / "a" / "00.png", root / "b" / "zz-copy.png")  # one image under both labels
    os.link(root / "a" / "01.png", root / "b" / "zz-hard.png")  # a hard link too
    with caplog.at_level(logging.WARNING, logger="hpo.training.folder"):
        _load(root)
    assert _counted_with_test(root) == 2 * PER_CLASS
    assert "left out 2 path(s)" in caplog.text


def test_a_class_folder_linked_from_elsewhere_is_used(tmp_path):
    """Links to real folders outside the data folder are followed, as before."""
    elsewhere = _classes(tmp_path / "store", names=("b",))
    root = _classes(tmp_path / "data", names=("a",))
    os.symlink(elsewhere / "b", root / "b")
    assert _counted_with_test(root) == 2 * PER_CLASS
    assert _load(root).class_names == ("a", "b")


# -- folders that cannot be trained on ---------------------------------------------------


def test_an_empty_folder(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(TrainingError, match="holds 0 class folder"):
        _load(tmp_path / "data")


def test_only_one_class(tmp_path):
    root = _classes(tmp_path / "data", names=("a",))
    with pytest.raises(TrainingError, match="holds 1 class folder"):
        _load(root)


def test_a_class_folder_without_images(tmp_path):
    root = _classes(tmp_path / "data")
    (root / "c").mkdir()
    (root / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(TrainingError, match=r"class folder .*/c holds no images"):
        _load(root)


def test_a_file_where_the_folder_is_expected(tmp_path):
    path = tmp_path / "data.png"
    _png(path, seed=0)
    with pytest.raises(TrainingError, match="is not a directory"):
        _load(path)


def test_a_class_where_every_image_is_corrupt(tmp_path):
    root = _classes(tmp_path / "data", names=("a",))
    (root / "b").mkdir()
    for i in range(3):
        (root / "b" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    splits = _load(root)  # safe: the broken files are listed, and b has no training images
    assert len(splits.skipped) == 3
    assert splits.class_counts["train"][1] == 0


# -- files inside a usable folder: skipped, each with its reason ---------------------------


def test_text_files_with_image_extensions_are_skipped(tmp_path, caplog):
    root = _classes(tmp_path / "data")
    (root / "a" / "notes.jpg").write_text("this is not a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        splits = _load(root)
    assert sorted(splits.skipped) == [str(root / "a" / "notes.jpg"), str(root / "b" / "empty.png")]
    assert "UnidentifiedImageError" in splits.skipped[str(root / "a" / "notes.jpg")]
    assert "skipped 2 unreadable image file(s)" in caplog.text


def test_a_truncated_image_is_skipped(tmp_path):
    root = _classes(tmp_path / "data")
    data = (root / "a" / "00.png").read_bytes()
    (root / "a" / "00.png").write_bytes(data[: len(data) // 2])
    splits = _load(root)
    assert list(splits.skipped) == [str(root / "a" / "00.png")]


def test_an_unreadable_file_is_skipped(tmp_path, monkeypatch):
    from PIL import Image

    root = _classes(tmp_path / "data")
    unreadable = root / "a" / "00.png"
    real_open = Image.open

    # chmod 0 would not stop root (tests may run as root): the open fails as it would for a user.
    def refusing_open(fp, *args, **kwargs):
        if str(fp) == str(unreadable):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", refusing_open)
    splits = _load(root)
    assert "PermissionError" in splits.skipped[str(root / "a" / "00.png")]


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A 100-byte PNG whose header claims ``width`` x ``height`` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's, at open
@pytest.mark.parametrize("side", [10_000, 20_000])  # over PIL's MAX_IMAGE_PIXELS; over twice it
def test_a_decompression_bomb_is_skipped_without_decoding(tmp_path, side):
    root = _classes(tmp_path / "data")
    bomb = root / "a" / "bomb.png"
    _png_claiming(bomb, side, side)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    splits = _load(root)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert list(splits.skipped) == [str(bomb)]
    reason = splits.skipped[str(bomb)]
    assert reason.startswith("ImageTooLarge: claims 10000x10000 pixels" if side == 10_000 else
                             "DecompressionBombError: Image size (400000000 pixels)"), reason
    assert grown_mb < 150, f"peak memory grew by {grown_mb:.0f} MB: the bomb was decoded"
