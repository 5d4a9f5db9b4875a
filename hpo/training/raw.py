"""A dataset as its source has it, before classes are chosen or splits carved.

Its own module so that the loaders (``folder``, ``torchvision_data``) and the registry that
names them (``datasets``) all import it, and imports run one way: registry -> loaders -> raw.
Torch- and numpy-free at import, like the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Part", "RawDataset"]


@dataclass(frozen=True, eq=False)
class Part:
    """Examples of one source split."""

    # numpy (N, C, H, W): uint8 0..255, or float32 unnormalised (digits); or, for image files
    # streamed by a DataLoader, a numpy object array (N,) of paths.
    x: Any
    y: Any  # numpy int64 (N,), values 0..len(class_names)-1
    # File-backed parts only: float64 (N, 2, C), per image the sum and the sum of squares of
    # its [0, 1] pixels per channel at the decoded size, so the training split's statistics
    # need no second decoding pass.
    pixel_sums: Any = None

    @property
    def file_backed(self) -> bool:
        return self.x.ndim == 1


@dataclass(frozen=True, eq=False)
class RawDataset:
    # "train" always: the official training set, or the whole dataset where the source has
    # no split. "val" and "test" where the source provides them (official test sets,
    # pre-split folders); whatever is missing is carved out of "train".
    parts: dict[str, Part]
    class_names: tuple[str, ...]
    shape: tuple[int, int, int]  # (C, H, W) of one stored (or decoded) image
    scale: float = 255.0  # stored value of a white pixel: x / scale lies in [0, 1]
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable files: path -> reason
