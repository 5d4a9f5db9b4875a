"""Batch sources: one split of a dataset, ready for the epoch loop.

The loop sees only ``BatchSource``: ``len``, ``labels`` (on the CPU, for class counts and
class weights) and ``batches()``, which yields normalised float32 ``(x, y)`` on the training
device at the final image size. Two implementations:

- ``TensorBatches``: the whole split lives on the device as one tensor (uint8 where the source
  is uint8, so 4x smaller than float); a batch is an index slice of a permutation made on the
  device, converted, normalised and resized there. No per-sample Python work.
- ``LoaderBatches``: image files decoded by a DataLoader's worker processes, for folders too
  big to hold decoded in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    import numpy as np

__all__ = ["BatchSource", "LoaderBatches", "TensorBatches", "batch_bounds"]


class BatchSource(Protocol):
    """One split, ready for the loop."""

    labels: torch.Tensor  # int64 (N,) on the CPU

    def __len__(self) -> int: ...

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None, train: bool = False,
        skip: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) on the training device: x float32 (B, C, H, W), normalised, at the final
        image size; shuffled with ``generator`` when given, in stored order otherwise; with
        ``train=True`` a final batch of a single example is dropped (it breaks BatchNorm);
        ``skip`` leaves out the first batches (resuming an epoch: the generator is restored to
        its state at the epoch's start, so the same permutation is drawn)."""
        ...


def batch_bounds(n: int, batch_size: int, *, train: bool = False) -> list[tuple[int, int]]:
    """``[start, stop)`` of each batch; with ``train`` a last batch of one example is dropped
    (the permutation changes every epoch, so no example is left out for good)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if train and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds.pop()
    return bounds


def _permutation(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # Made where the generator lives (a CUDA generator draws on the GPU), then moved.
    return torch.randperm(n, generator=generator, device=generator.device).to(
        device, non_blocking=True
    )


def _affine(
    mean: Sequence[float], std: Sequence[float], scale: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) with ``x * a + b == (x / scale - mean) / std``, shaped (1, C, 1, 1)."""
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    a = (1.0 / (scale * s)).float().view(1, -1, 1, 1).to(device)
    b = (-m / s).float().view(1, -1, 1, 1).to(device)
    return a, b


def resize(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinear resize of a float batch (antialiased when shrinking); a no-op at that size."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


class TensorBatches:
    """A split held whole on the device; batches are index slices, normalised per batch.

    ``x`` keeps the source's dtype (uint8 pixels 0..255, or float for digits) at the stored
    size; conversion to float, normalisation and the resize to ``image_size`` happen one batch
    at a time, so upsampling a large split costs one batch of memory, not the whole split's.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        scale: float = 255.0,
        image_size: tuple[int, int] | None = None,
    ):
        if x.ndim != 4 or len(x) != len(y):
            raise ValueError(
                f"need x (N, C, H, W) and y (N,); got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        self.x = x
        self.y = y.to(x.device, torch.int64)
        self.labels = y.detach().to("cpu", torch.int64)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self._a, self._b = _affine(mean, std, scale, x.device)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def __len__(self) -> int:
        return len(self.x)

    def _prepare(self, raw: torch.Tensor) -> torch.Tensor:
        x = raw.float() * self._a + self._b
        return resize(x, self.image_size)

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None, train: bool = False,
        skip: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        bounds = batch_bounds(n, batch_size, train=train)
        if generator is None:
            for start, stop in bounds[skip:]:
                yield self._prepare(self.x[start:stop]), self.y[start:stop]
            return
        perm = _permutation(n, generator, self.x.device)
        for start, stop in bounds[skip:]:
            idx = perm[start:stop]
            yield self._prepare(self.x[idx]), self.y[idx]


class _FileDataset(torch.utils.data.Dataset):
    """Decodes one image file to a uint8 (C, S, S) tensor, in a DataLoader worker."""

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, size: int, channels: int):
        self.paths = list(paths)
        self.labels = labels
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from hpo.training.folder import decode_image

        x = decode_image(self.paths[i], self.size, self.channels)
        return torch.from_numpy(x), self.labels[i]


class LoaderBatches:
    """Image files decoded on the fly by ``num_workers`` DataLoader processes.

    The workers return uint8 tensors already at ``image_size`` (file sizes differ, so the
    resize happens while decoding); conversion and normalisation happen on the device.
    """

    def __init__(
        self,
        paths: Sequence[str] | np.ndarray,
        labels: torch.Tensor,
        *,
        image_size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        num_workers: int = 2,
    ):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = tuple(str(p) for p in paths)
        self.labels = labels.detach().to("cpu", torch.int64)
        self.image_size = (int(image_size), int(image_size))
        self.channels = channels
        self.device = torch.device(device)
        self.num_workers = num_workers
        self._dataset = _FileDataset(self.paths, self.labels, int(image_size), channels)
        self._a, self._b = _affine(mean, std, 255.0, self.device)

    def __len__(self) -> int:
        return len(self.paths)

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None, train: bool = False,
        skip: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        if generator is None:
            order = torch.arange(n)
        else:
            order = _permutation(n, generator, torch.device("cpu"))
        bounds = batch_bounds(n, batch_size, train=train)
        sampler = [order[start:stop].tolist() for start, stop in bounds[skip:]]
        loader = torch.utils.data.DataLoader(
            self._dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for xb, yb in loader:
            xb = xb.to(self.device, non_blocking=True)
            yield xb.float() * self._a + self._b, yb.to(self.device, non_blocking=True)
