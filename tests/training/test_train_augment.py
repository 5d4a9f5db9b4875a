"""Batch augmentation: each kernel does what its name says, on whole batches."""

import pytest
import torch
import torch.nn.functional as F

from hpo.errors import TrainingError
from hpo.models import MLPConfig
from hpo.training import DataConfig, TrainConfig, loop, train_model
from hpo.training.augment import (
    AUGMENTATIONS,
    ColorJitter,
    HFlip,
    RandomCrop,
    RandomErasing,
    Rotation,
    resolve_augment,
)
from hpo.training.augment_ops import Augment, build_augment, warp

GRAY = {"in_shape": (1, 8, 8), "mean": (0.5,), "std": (0.25,)}
RGB = {"in_shape": (3, 8, 8), "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3)}


def batch(channels: int = 1, n: int = 16, seed: int = 0) -> torch.Tensor:
    # Normalised images with no exact zeros, so erased pixels are recognisable.
    x = torch.randn(n, channels, 8, 8, generator=torch.Generator().manual_seed(seed))
    return x + torch.sign(x) * 0.01


def augment(*steps, shape=GRAY, seed=0):
    return Augment(list(steps), seed=seed, **shape)


def test_hflip_p1_is_torch_flip_and_p0_is_identity():
    x = batch()
    assert torch.equal(augment(HFlip(p=1.0))(x), torch.flip(x, dims=[3]))
    assert torch.equal(augment(HFlip(p=0.0))(x), x)


def test_hflip_flips_a_random_subset_whole():
    x = batch(n=64)
    y = augment(HFlip(p=0.5))(x)
    flipped = [torch.equal(a, torch.flip(b, dims=[2])) for a, b in zip(y, x)]
    kept = [torch.equal(a, b) for a, b in zip(y, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_vflip_p1_flips_rows():
    x = batch()
    assert torch.equal(augment(AUGMENTATIONS.get("vflip")(p=1.0))(x), torch.flip(x, dims=[2]))


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_random_crop_is_a_shifted_window_of_the_padded_image(mode):
    x = batch(n=8)
    y = augment(RandomCrop(padding=2, padding_mode=mode))(x)
    assert y.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect" if mode == "reflect" else "constant")
    offsets = []
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(y[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert found, f"image {i} is not a window of its padded self"
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # per-image offsets, not one for the batch


def test_reflect_padding_must_be_below_the_image_side():
    with pytest.raises(TrainingError, match="reflect padding must be below the image side"):
        augment(RandomCrop(padding=8))
    augment(RandomCrop(padding=8, padding_mode="zeros"))  # zeros has no such limit


def test_random_erasing_zeros_one_rectangle_per_image():
    x = batch(n=32)
    y = augment(RandomErasing(p=1.0, scale=[0.1, 0.3]))(x)
    for a, b in zip(y, x):
        erased = (a == 0).all(dim=0)  # (H, W)
        assert erased.any()
        rows, cols = erased.any(dim=1).nonzero().flatten(), erased.any(dim=0).nonzero().flatten()
        # A filled rectangle: its bounding box is entirely erased ...
        box = erased[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()
        # ... and nothing outside it changed.
        assert torch.equal(a[:, ~erased], b[:, ~erased])
    assert torch.equal(augment(RandomErasing(p=0.0))(x), x)


def test_rotation_by_zero_and_affine_identity_change_nothing():
    x = batch()
    assert torch.allclose(augment(Rotation(degrees=0))(x), x, atol=1e-5)
    identity = AUGMENTATIONS.get("affine")(degrees=0, translate=0, scale=[1, 1])
    assert torch.allclose(augment(identity)(x), x, atol=1e-5)


def test_warp_rotates_counter_clockwise_and_shifts_by_fractions():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    one = torch.ones(1)
    rotated = warp(x, torch.tensor([90.0]), one, torch.zeros(1, 2))
    assert torch.allclose(rotated, torch.rot90(x, 1, dims=(2, 3)), atol=1e-4)
    shifted = warp(x, torch.zeros(1), one, torch.tensor([[0.25, 0.0]]))  # one pixel right
    assert torch.allclose(shifted[..., 1:], x[..., :3], atol=1e-4)
    assert torch.allclose(shifted[..., 0], torch.zeros(1, 1, 4), atol=1e-4)  # mean colour


def test_rotation_changes_images_but_keeps_a_flat_one_flat_inside():
    x = batch()
    assert not torch.allclose(augment(Rotation(degrees=30))(x), x, atol=1e-3)
    flat = torch.full((4, 1, 8, 8), 0.7)
    y = augment(Rotation(degrees=30))(flat)
    assert torch.allclose(y[..., 3:5, 3:5], flat[..., 3:5, 3:5], atol=1e-5)


def pixels(x, shape):
    mean = torch.tensor(shape["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(shape["std"]).view(1, -1, 1, 1)
    return x * std + mean


def test_brightness_scales_each_images_pixels_by_one_factor_in_range():
    raw = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.1
    x = (raw - 0.5) / 0.25  # normalised as GRAY says
    y = augment(ColorJitter(brightness=0.3, contrast=0, saturation=0))(x)
    factor = pixels(y, GRAY) / raw  # no clipping: pixels stay within [0.07, 0.78]
    per_image = factor.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-4)
    assert ((per_image[:, 0] >= 0.7 - 1e-5) & (per_image[:, 0] <= 1.3 + 1e-5)).all()
    assert per_image[:, 0].std() > 0.01


def test_color_jitter_keeps_pixels_in_range_and_skips_saturation_on_gray():
    x = batch(channels=1) * 3
    y = augment(ColorJitter(brightness=0.5, contrast=0.5, saturation=0))(x)
    assert pixels(y, GRAY).min() >= -1e-5 and pixels(y, GRAY).max() <= 1 + 1e-5
    only_saturation = ColorJitter(brightness=0, contrast=0, saturation=0.9)
    assert torch.allclose(augment(only_saturation)(x), x)  # one channel: nothing to saturate


def test_saturation_changes_colour_but_not_gray_pixels():
    only_saturation = ColorJitter(brightness=0, contrast=0, saturation=0.9)
    raw = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    mean, std = (
        torch.tensor(RGB["mean"]).view(1, 3, 1, 1),
        torch.tensor(RGB["std"]).view(1, 3, 1, 1),
    )
    y = augment(only_saturation, shape=RGB)((raw - mean) / std)
    assert not torch.allclose(pixels(y, RGB), raw, atol=1e-3)
    gray = raw[:, :1].expand(8, 3, 8, 8)  # equal channels: no colour to change
    y = augment(only_saturation, shape=RGB)((gray - mean) / std)
    assert torch.allclose(pixels(y, RGB), gray, atol=1e-5)


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
@pytest.mark.parametrize("shape", [GRAY, RGB], ids=["gray", "rgb"])
def test_every_transform_keeps_shape_dtype_device_and_is_seeded(name, shape):
    x = batch(channels=shape["in_shape"][0])
    step = AUGMENTATIONS.get(name)(**({"padding": 2} if name == "random_crop" else {}))
    y = augment(step, shape=shape)(x)
    assert (y.shape, y.dtype, y.device) == (x.shape, x.dtype, x.device)
    assert torch.isfinite(y).all()
    assert torch.equal(augment(step, shape=shape, seed=5)(x), augment(step, shape=shape, seed=5)(x))
    assert not torch.equal(x, y) or name == "color_jitter"  # jitter may round-trip exactly
    # Successive batches get fresh randomness.
    a = augment(step, shape=shape)
    assert not torch.equal(a(x), a(x)) or name == "color_jitter"


def test_presets_resolve_at_the_image_size():
    assert resolve_augment("none", (3, 32, 32)) == []
    assert resolve_augment("light", (3, 32, 32)) == [HFlip(), RandomCrop(padding=4)]
    assert resolve_augment("light", (1, 8, 8)) == [HFlip(), RandomCrop(padding=1)]
    strong = [s.name for s in resolve_augment("strong", (3, 32, 32))]
    assert strong == ["hflip", "random_crop", "rotation", "color_jitter", "random_erasing"]
    assert resolve_augment("vflip", (1, 8, 8)) == [AUGMENTATIONS.get("vflip")()]
    assert build_augment("none", seed=0, **GRAY) is None
    assert build_augment([], seed=0, **GRAY) is None
    assert isinstance(build_augment("strong", seed=0, **RGB), Augment)


def test_only_training_batches_are_augmented(monkeypatch):
    seen: list[int] = []
    real = loop.build_augment

    def spy(*args, **kwargs):
        aug = real(*args, **kwargs)
        if aug is None:
            return None

        def call(x):
            seen.append(len(x))
            return aug(x)

        return call

    monkeypatch.setattr(loop, "build_augment", spy)
    data = DataConfig(augment="light")
    cfg = TrainConfig(epochs=2, batch_size=100)
    result = train_model(data, MLPConfig(n_layers=1, width=16), cfg)
    # 1078 training images: 10 batches of 100 and one of 78, per epoch; validation (360
    # images, in batches of 256) never passes through.
    assert seen == ([100] * 10 + [78]) * 2
    plain = train_model(DataConfig(), MLPConfig(n_layers=1, width=16), cfg)
    assert result.history[0].train_loss != plain.history[0].train_loss
