"""MNIST, FashionMNIST, KMNIST, CIFAR-10 and CIFAR-100 through torchvision's dataset classes.

Each keeps its official split: the official test set becomes our held-out test split, and
validation is carved from the official training set. Pixels stay uint8 (N, C, H, W).

Integrity: torchvision checks MNIST-family files for presence only, but CIFAR files against
the md5 sums of the official release. We check presence for both (and say exactly which files
are missing and where they go), then let torchvision parse them and check the result's shape
and labels; a truncated or foreign file fails there with a clear error. We drop the md5 check
of files already on disk because re-hashing the whole dataset on every worker start buys little
over the parse-and-shape check, and it rejects faithful copies that were re-pickled (and the tiny
batches our tests write). Downloads (``data.download: true``) still verify the archive's md5.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpo.errors import TrainingError
from hpo.training.raw import Part, RawDataset

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class _Source:
    cls_name: str  # the torchvision class
    family: str  # "mnist" or "cifar"


SOURCES = {
    "mnist": _Source("MNIST", "mnist"),
    "fashion_mnist": _Source("FashionMNIST", "mnist"),
    "kmnist": _Source("KMNIST", "mnist"),
    "cifar10": _Source("CIFAR10", "cifar"),
    "cifar100": _Source("CIFAR100", "cifar"),
}


def _without_md5(base: type[Any]) -> type[Any]:
    """``base`` with its on-disk md5 checks reduced to presence checks (see module doc)."""
    return type(
        base.__name__,
        (base,),
        {
            "train_list": [[f, None] for f, _ in base.train_list],
            "test_list": [[f, None] for f, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )


def _tv_class(source: _Source) -> type:
    import torchvision.datasets as tvd

    cls = getattr(tvd, source.cls_name)  # a fixed name from SOURCES, never user input
    return _without_md5(cls) if source.family == "cifar" else cls


def _folder_and_files(source: _Source, tv: type[Any], root: str) -> tuple[str, list[str]]:
    if source.family == "mnist":
        return os.path.join(root, source.cls_name, "raw"), list(_MNIST_FILES)
    files = [f for f, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]
    return os.path.join(root, tv.base_folder), files


def _gunzip_missing(folder: str, files: list[str]) -> None:
    """MNIST-family files are distributed gzipped; torchvision reads only unpacked ones."""
    for f in files:
        path = os.path.join(folder, f)
        if not os.path.isfile(path) and os.path.isfile(path + ".gz"):
            try:
                with gzip.open(path + ".gz", "rb") as src, open(path + ".part", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(path + ".part", path)
            except (OSError, EOFError) as e:
                raise TrainingError(f"cannot unpack {path}.gz: {e}") from None


def _missing(source: _Source, tv: type[Any], root: str) -> list[str]:
    folder, files = _folder_and_files(source, tv, root)
    if source.family == "mnist":
        if os.path.isdir(os.path.join(root, source.cls_name, "processed")):
            # torchvision still reads its old processed/training.pt + test.pt layout
            processed = os.path.join(root, source.cls_name, "processed")
            legacy = [os.path.join(processed, f) for f in ("training.pt", "test.pt")]
            if all(os.path.isfile(p) for p in legacy):
                return []
        _gunzip_missing(folder, files)
    return [f for f in files if not os.path.isfile(os.path.join(folder, f))]


def _not_found(
    source: _Source, tv: type[Any], root: str, missing: list[str], why: str = ""
) -> TrainingError:
    folder, files = _folder_and_files(source, tv, root)
    gz = "(.gz)" if source.family == "mnist" else ""
    listed = ", ".join(f + gz for f in files)
    archive = f" (from {tv.filename})" if source.family == "cifar" else ""
    partly = f" ({', '.join(missing)} missing)" if len(missing) < len(files) else ""
    where = f"put {listed} into {folder}{os.sep}{archive}{partly}"
    if why:  # data.download was already true
        return TrainingError(f"could not download {source.cls_name} ({why}); {where}")
    return TrainingError(
        f"{source.cls_name} not found: {where} or set data.download: true "
        f"(data.root or $HPO_DATA_ROOT choose the root, now {root!r})"
    )


def _class_names(name: str, tv_classes: list[str]) -> tuple[str, ...]:
    if name == "mnist":  # torchvision says "0 - zero"; "0" matches digits and reads better
        return tuple(str(i) for i in range(10))
    return tuple(str(c) for c in tv_classes)


def _part(ds: object, source: _Source, n_classes: int, path: str) -> Part:
    data = ds.data  # type: ignore[attr-defined]
    x = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    if source.family == "mnist":
        x = x[:, None, :, :]  # (N, 28, 28) -> (N, 1, 28, 28)
    else:
        x = x.transpose(0, 3, 1, 2)  # torchvision made it HWC
    x = np.ascontiguousarray(x, dtype=np.uint8)
    y = np.asarray(ds.targets, dtype=np.int64)  # type: ignore[attr-defined]
    if len(x) != len(y) or len(y) == 0:
        raise TrainingError(
            f"{source.cls_name} in {path} looks corrupt: {len(x)} images but {len(y)} labels"
        )
    if y.min() < 0 or y.max() >= n_classes:
        raise TrainingError(
            f"{source.cls_name} in {path} looks corrupt: labels {y.min()}..{y.max()} "
            f"but {n_classes} classes"
        )
    return Part(x, y)


def load_torchvision(name: str, *, root: str, download: bool) -> RawDataset:
    source = SOURCES[name]
    tv = _tv_class(source)
    missing = _missing(source, tv, root)
    if missing and not download:
        raise _not_found(source, tv, root, missing)
    parts = {}
    folder = _folder_and_files(source, tv, root)[0]
    for split, train in (("train", True), ("test", False)):
        try:
            ds = tv(root, train=train, download=download)
        except (OSError, RuntimeError) as e:  # no network, refused, bad archive
            if download and _missing(source, tv, root):
                why = " ".join(str(e).split())  # torchvision's message spans lines
                raise _not_found(source, tv, root, _missing(source, tv, root), why) from None
            raise TrainingError(f"{source.cls_name} in {folder} could not be read: {e}") from None
        except Exception as e:  # unpickling, parsing or reshaping a damaged file
            raise TrainingError(
                f"{source.cls_name} in {folder} looks corrupt ({type(e).__name__}: {e}); "
                f"replace its files or set data.download: true after removing them"
            ) from None
        names = _class_names(name, list(ds.classes))
        parts[split] = _part(ds, source, len(names), folder)
    c, h, w = parts["train"].x.shape[1:]
    if parts["test"].x.shape[1:] != (c, h, w):
        raise TrainingError(f"{source.cls_name} in {folder}: train and test images differ in shape")
    return RawDataset(parts=parts, class_names=names, shape=(int(c), int(h), int(w)))
