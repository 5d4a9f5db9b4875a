"""The tensor kernels behind ``hpo.training.augment``: whole-batch ops with per-image random
parameters drawn on the batch's device, so augmentation adds no host synchronisation.

Every kernel takes a normalised float batch ``(B, C, H, W)`` and returns one of the same
shape, dtype and device. Randomness comes from one generator per trial, seeded from
``train.seed``, so runs with the same seed see the same augmented batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from hpo.errors import TrainingError
from hpo.training.augment import (
    Affine,
    AugmentStep,
    ColorJitter,
    HFlip,
    RandomCrop,
    RandomErasing,
    Rotation,
    VFlip,
    resolve_augment,
)

Kernel = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(
    n: int, low: float, high: float, like: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    u = torch.rand(n, device=like.device, generator=gen)
    return low + (high - low) * u


def flip(x: torch.Tensor, gen: torch.Generator, *, p: float, dim: int) -> torch.Tensor:
    chosen = torch.rand(len(x), 1, 1, 1, device=x.device, generator=gen) < p
    return torch.where(chosen, x.flip(dim), x)


def random_crop(
    x: torch.Tensor, gen: torch.Generator, *, padding: int, reflect: bool
) -> torch.Tensor:
    """Pad every side, then cut an image-sized window at a random offset per image."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect" if reflect else "constant")
    top = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device, generator=gen)
    left = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device, generator=gen)
    rows = top + torch.arange(h, device=x.device)  # (B, H)
    cols = left + torch.arange(w, device=x.device)  # (B, W)
    x = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def affine(
    x: torch.Tensor,
    gen: torch.Generator,
    *,
    degrees: float,
    translate: float,
    scale: Sequence[float],
) -> torch.Tensor:
    """Rotate, zoom and shift each image by its own random amount (bilinear; the uncovered
    border becomes the mean colour)."""
    b = len(x)
    angle = _uniform(b, -degrees, degrees, x, gen)
    zoom = _uniform(b, scale[0], scale[1], x, gen)
    shift = _uniform(2 * b, -translate, translate, x, gen).view(b, 2)
    return warp(x, angle, zoom, shift)


def warp(
    x: torch.Tensor, degrees: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """Rotate each image by ``degrees`` (counter-clockwise as displayed), zoom by ``zoom``,
    then shift by ``shift`` (B, 2) = (right, down) fractions of the width and height."""
    _, _, h, w = x.shape
    angle = degrees * (-math.pi / 180)  # y points down, so counter-clockwise is negative
    shift = shift * 2  # fractions of the side -> normalised coordinates, which span 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # The grid maps output to input coordinates: the inverse rotation and zoom, written for
    # normalised coordinates of a possibly non-square image (hence the aspect factors).
    a = torch.stack(
        [torch.stack([cos, sin * (h / w)], -1), torch.stack([-sin * (w / h), cos], -1)], -2
    )  # (B, 2, 2)
    offset = -(a @ shift[:, :, None])  # (B, 2, 1)
    theta = torch.cat([a, offset], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_erasing(
    x: torch.Tensor,
    gen: torch.Generator,
    *,
    p: float,
    scale: Sequence[float],
    ratio: Sequence[float],
) -> torch.Tensor:
    """Set one random rectangle per chosen image to zero (the mean colour)."""
    b, _, h, w = x.shape
    area = _uniform(b, scale[0], scale[1], x, gen) * (h * w)
    aspect = torch.exp(_uniform(b, math.log(ratio[0]), math.log(ratio[1]), x, gen))
    eh = torch.sqrt(area * aspect).round().clamp(1, h)
    ew = torch.sqrt(area / aspect).round().clamp(1, w)
    top = (torch.rand(b, device=x.device, generator=gen) * (h - eh + 1)).floor()
    left = (torch.rand(b, device=x.device, generator=gen) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (B, W)
    chosen = torch.rand(b, device=x.device, generator=gen) < p
    mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]
    return x.masked_fill(mask[:, None], 0.0)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:  # ITU-R 601 luma, as torchvision; Python scalars copy nothing to the device
        return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return x.mean(1, keepdim=True)


def color_jitter(
    x: torch.Tensor,
    gen: torch.Generator,
    *,
    brightness: float,
    contrast: float,
    saturation: float,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """torchvision's ColorJitter arithmetic (fixed order) on pixel values rebuilt from the
    normalised batch, clipped to [0, 1], then normalised again."""
    b = len(x)
    pixels = x * std + mean

    def factor(amount: float) -> torch.Tensor:
        return _uniform(b, max(0.0, 1 - amount), 1 + amount, x, gen).view(b, 1, 1, 1)

    if brightness:
        pixels = (pixels * factor(brightness)).clamp(0, 1)
    if contrast:
        centre = _gray(pixels).mean((1, 2, 3), keepdim=True)
        pixels = ((pixels - centre) * factor(contrast) + centre).clamp(0, 1)
    if saturation and x.shape[1] == 3:
        gray = _gray(pixels)
        pixels = ((pixels - gray) * factor(saturation) + gray).clamp(0, 1)
    return (pixels - mean) / std


def _kernel(step: AugmentStep, in_shape: tuple[int, int, int], aug: Augment) -> Kernel:
    """The kernel for one configured step; impossible settings fail here, before training."""
    if isinstance(step, HFlip | VFlip):
        dim = -1 if isinstance(step, HFlip) else -2
        return lambda x, g: flip(x, g, p=step.p, dim=dim)
    if isinstance(step, RandomCrop):
        reflect = step.padding_mode == "reflect"
        if reflect and step.padding >= min(in_shape[1:]):
            raise TrainingError(
                f"data.augment random_crop: reflect padding must be below the image side "
                f"({min(in_shape[1:])} px; got padding {step.padding}); lower it or use "
                f"padding_mode: zeros"
            )
        return lambda x, g: random_crop(x, g, padding=step.padding, reflect=reflect)
    if isinstance(step, Rotation):
        return lambda x, g: affine(x, g, degrees=step.degrees, translate=0.0, scale=(1.0, 1.0))
    if isinstance(step, Affine):
        return lambda x, g: affine(
            x, g, degrees=step.degrees, translate=step.translate, scale=step.scale
        )
    if isinstance(step, RandomErasing):
        return lambda x, g: random_erasing(x, g, p=step.p, scale=step.scale, ratio=step.ratio)
    if isinstance(step, ColorJitter):
        return lambda x, g: color_jitter(
            x,
            g,
            brightness=step.brightness,
            contrast=step.contrast,
            saturation=step.saturation,
            mean=aug.mean,  # moved to the batch's device once, with the generator
            std=aug.std,
        )
    raise TrainingError(f"augmentation {step.name!r} has no kernel")


class Augment:
    """The configured steps, in order, with the trial's own generator on the batch's device."""

    def __init__(
        self,
        steps: Sequence[AugmentStep],
        *,
        in_shape: tuple[int, int, int],
        mean: Any,
        std: Any,
        seed: int,
    ):
        channels = in_shape[0]
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if self.mean.shape[1] not in (1, channels):
            raise TrainingError(
                f"augmentation: {self.mean.shape[1]} channel means for {channels} channels"
            )
        self.steps = tuple(steps)
        self.seed = seed
        self._kernels = [_kernel(step, in_shape, self) for step in self.steps]
        self._gen: torch.Generator | None = None
        self._device: torch.device | None = None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._device != device:
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
            self._device = device
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self._gen

    def state_dict(self) -> dict[str, Any]:
        """The generator's state (None before the first batch), for checkpoints."""
        return {"generator": None if self._gen is None else self._gen.get_state(),
                "device": None if self._device is None else str(self._device)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["generator"] is not None:
            self._generator(torch.device(state["device"])).set_state(state["generator"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gen = self._generator(x.device)
        with torch.no_grad():
            for kernel in self._kernels:
                x = kernel(x, gen)
        return x


def build_augment(
    value: str | Sequence[AugmentStep],
    *,
    in_shape: tuple[int, int, int],
    mean: Any,
    std: Any,
    seed: int,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A callable augmenting a normalised batch in place of the original, or None for none
    (so the loop skips the call, and the checkpoint has no generator to save)."""
    steps = resolve_augment(value, in_shape)
    if not steps:
        return None
    return Augment(steps, in_shape=in_shape, mean=mean, std=std, seed=seed)
