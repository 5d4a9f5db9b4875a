"""Epoch time of hpo's training loop against a plain DataLoader loop, for a CNN and an MLP on
FashionMNIST-shaped data and for the digits CNN.

The plain loop is how these models were trained before the service: torchvision's
FashionMNIST with ToTensor + Normalize, a DataLoader, the same model, optimiser and batch
size. Datasets cannot be downloaded here, so the benchmark writes a FashionMNIST-shaped
dataset (60,000 + 10,000 random 28x28 images) in the real IDX format and both paths read it
through torchvision's own FashionMNIST class. For digits (scikit-learn's 8x8 images), the
plain loop is a map-style Dataset over scikit-learn's arrays with the same transforms.

    uv run python -m benchmarks.data_path                 # full size, 5 repetitions
    uv run python -m benchmarks.data_path --tiny          # a smoke run (the test suite uses it)

Prints a Markdown table (and writes it with --output FILE): median seconds per epoch over
the repetitions, images per second, and the ratio.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def write_fashion_mnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Random images in FashionMNIST's IDX files (what torchvision reads from raw/)."""
    rng = np.random.default_rng(seed)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
        for suffix in ("images-idx3-ubyte", "labels-idx1-ubyte"):  # torchvision reads these
            with gzip.open(raw / f"{prefix}-{suffix}.gz", "rb") as src:
                (raw / f"{prefix}-{suffix}").write_bytes(src.read())


MODELS = {
    "cnn": ("CNN 2×32 filters + FC 128", {"name": "cnn", "n_blocks": 2, "filters": 32, "fc_width": 128}),
    "mlp": ("MLP 2×256", {"name": "mlp", "n_layers": 2, "width": 256}),
    # search_spaces/digits_cnn.yaml's fixed model
    "digits": ("digits CNN 2×32 filters + FC 64", {"name": "cnn", "n_blocks": 2, "filters": 32, "fc_width": 64}),
}


def make_model_and_optimizer(seed: int, model: str, in_shape: tuple[int, int, int] = (1, 28, 28)):
    from hpo.models import create_model
    from hpo.models.registry import parse_model_config

    torch.manual_seed(seed)
    net = create_model(parse_model_config(MODELS[model][1]), in_shape, 10)
    return net, torch.optim.Adam(net.parameters(), lr=1e-3)


def step(model, optimizer, x, y) -> None:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def plain_epoch(root: Path, indices: np.ndarray, batch_size: int, workers: int, model: str) -> float:
    """torchvision dataset + transforms + DataLoader, as a hand-written script does it."""
    from torch.utils.data import Subset
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.29,))])
    dataset = Subset(datasets.FashionMNIST(str(root), train=True, transform=transform), indices.tolist())
    return loader_epoch(dataset, batch_size, workers, model, (1, 28, 28))


class DigitsDataset(torch.utils.data.Dataset):
    """scikit-learn's digits as a script would wrap them: one transformed image per item."""

    def __init__(self, indices: np.ndarray):
        from sklearn.datasets import load_digits
        from torchvision import transforms

        digits = load_digits()
        self.images = (digits.images[indices] / 16).astype(np.float32)[..., None]  # H, W, C
        self.labels = digits.target[indices]
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.3,), (0.4,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


def loader_epoch(dataset, batch_size: int, workers: int, model: str, in_shape: tuple[int, int, int]) -> float:
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=False)
    net, optimizer = make_model_and_optimizer(0, model, in_shape)
    net.train()
    started = time.perf_counter()
    for x, y in loader:
        step(net, optimizer, x, y)
    return time.perf_counter() - started


def hpo_epoch(splits, data, batch_size: int, model: str) -> float:
    """hpo's own epoch loop (hpo.training.loop._train_epoch, as every trial runs it) over the
    split held as a tensor on the device, batches drawn as index slices."""
    from hpo.models.registry import parse_model_config
    from hpo.training.config import TrainConfig
    from hpo.training.loop import _build, _train_epoch

    train = TrainConfig(epochs=1, batch_size=batch_size, optimizer="adam", lr=1e-3, seed=0)
    run = _build(data, parse_model_config(MODELS[model][1]), train, splits, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    _train_epoch(run, splits.train, batch_size, generator, 1)
    return time.perf_counter() - started


def compare(model: str, plain_epoch_fn, hpo_epoch_fn, plain_label: str, n_images: int, repeats: int,
            batch_size: int, prepare: float) -> str:
    """One model's table: both epochs, interleaved (drifting machine load hits both alike)."""
    hpo_epoch_fn()  # warm-up: first-call costs are not per epoch
    plain, fast = [], []
    for _ in range(repeats):
        plain.append(plain_epoch_fn())
        fast.append(hpo_epoch_fn())
    p, h = statistics.median(plain), statistics.median(fast)
    return "\n".join([
        f"{MODELS[model][0]}:",
        "",
        "| path | median s/epoch | images/s |",
        "|---|---|---|",
        f"| plain: {plain_label} | {p:.3f} | {n_images / p:,.0f} |",
        f"| hpo: in-memory tensors, index batches, hpo's epoch loop | {h:.3f} | {n_images / h:,.0f} |",
        "",
        f"Speed-up: **{p / h:.2f}×** (median of {repeats}; {n_images:,} training images, batch {batch_size}, "
        f"{MODELS[model][0]}, Adam; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}). hpo's one-off preparation per worker: {prepare:.2f} s.",
    ])


def prepared(data):
    """hpo's splits for ``data`` and how long preparing them took."""
    from hpo.training.data import load_splits

    started = time.perf_counter()
    splits = load_splits(data, "cpu")
    return splits, time.perf_counter() - started


def run(n_train: int, n_test: int, repeats: int, batch_size: int, workers: int, models: list[str]) -> str:
    from hpo.training.config import DataConfig

    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_fashion_mnist(root, n_train, n_test)
        data = DataConfig(name="fashion_mnist", root=str(root), val_fraction=0.1)
        splits, prepare = prepared(data)
        n_images = len(splits.train)
        # The plain loop trains on as many images as hpo's training split holds.
        indices = np.random.default_rng(0).permutation(n_train)[:n_images]
        for model in (m for m in models if m != "digits"):
            tables.append(compare(
                model, lambda model=model: plain_epoch(root, indices, batch_size, workers, model),
                lambda model=model: hpo_epoch(splits, data, batch_size, model),
                f"torchvision FashionMNIST + DataLoader (num_workers={workers})", n_images, repeats, batch_size,
                prepare))
    if "digits" in models:
        data = DataConfig(name="digits")  # 60 / 20 / 20 % train / validation / test
        splits, prepare = prepared(data)
        from hpo.training.data import _plan_for

        dataset = DigitsDataset(_plan_for(data).splits["train"][1])  # the same training images
        tables.append(compare(
            "digits", lambda: loader_epoch(dataset, batch_size, workers, "digits", (1, 8, 8)),
            lambda: hpo_epoch(splits, data, batch_size, "digits"),
            f"Dataset over scikit-learn's digits + transforms + DataLoader (num_workers={workers})",
            len(splits.train), repeats, batch_size, prepare))
    return "\n\n".join(tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2,000 images, 1 repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    parser.add_argument("--model", choices=["cnn", "mlp", "digits", "all"], default="all")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    n_train, n_test, repeats = (2000, 500, 1) if args.tiny else (60000, 10000, args.repeats)
    models = ["cnn", "mlp", "digits"] if args.model == "all" else [args.model]
    table = run(n_train, n_test, repeats, args.batch_size, args.workers, models)
    from benchmarks.common import write_table

    write_table(table, args.output)


if __name__ == "__main__":
    main()
