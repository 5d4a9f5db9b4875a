"""Dataset registry: names -> loaders. Torch-free, so the spec can check ``data.name``.

A loader returns the dataset as its source has it (``hpo.training.raw.RawDataset``): numpy
pixels or image file paths, in one or more parts. ``hpo.training.data`` selects classes,
splits, computes the normalisation statistics and builds the batch sources. Loaders take
explicit keyword arguments named like ``data.*`` keys (``root``, ``download``, ``path``, ...);
the adapter in ``hpo.training.data`` passes exactly the ones a loader declares, which also
keys its cache.
Heavy dependencies (torchvision, PIL, scikit-learn) are imported inside the loaders.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hpo.registry import Registry
from hpo.training.raw import Part, RawDataset

DATA_ROOT_ENV = "HPO_DATA_ROOT"
DEFAULT_DATA_ROOT = "data"

DATASETS = Registry[Callable[..., RawDataset]]("dataset")


def resolve_root(root: str | None) -> str:
    """``data.root``, else $HPO_DATA_ROOT, else ``data`` (relative to the worker's cwd).

    Resolved on the worker, not when the spec is validated, so every machine can keep its
    datasets where it likes.
    """
    return root if root is not None else os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT


@DATASETS.register("digits")
def load_digits() -> RawDataset:
    """scikit-learn's bundled 8x8 digits (1797 images, pixels 0..16): offline and tiny,
    so tests, examples and the quick start run anywhere, with no download."""
    import numpy as np
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return RawDataset(
        parts={"train": Part(x, y)},
        class_names=tuple(str(n) for n in bunch.target_names),
        shape=(1, 8, 8),
        scale=16.0,
    )


def _torchvision(name: str) -> Callable[..., RawDataset]:
    def load(*, root: str, download: bool) -> RawDataset:
        from hpo.training.torchvision_data import load_torchvision

        return load_torchvision(name, root=root, download=download)

    load.__name__ = f"load_{name}"
    load.__doc__ = f"torchvision's {name} with its official train/test split."
    return load


for _name in ("mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100"):
    DATASETS.add(_name, _torchvision(_name))


@DATASETS.register("image_folder")
def load_image_folder(
    *, path: str | None, image_size: int | None, in_memory: bool | None
) -> RawDataset:
    """A directory of class sub-folders, or of train/ (val/) (test/) holding them."""
    from hpo.training.folder import load_folder

    return load_folder(path=path, image_size=image_size, in_memory=in_memory)
