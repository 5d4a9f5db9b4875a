"""Batch augmentation: named, parameterised transforms applied to each training batch on the
device, with per-image random parameters drawn as tensors (no per-image Python work).

This module is torch-free so ``data.augment`` is checked without torch; the kernels and
``build_augment`` live in ``hpo.training.augment_ops``, which imports this one (never the
other way round).

``data.augment`` is a preset (``none``, ``light``, ``strong``), one transform's name, or a
list of names and ``{name: ..., <param>: ...}`` mappings, applied in order (a step with
``enabled: false`` is skipped). Batches arrive
normalised, so "zero" (padding, erasing) is the training set's mean colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    field_validator,
    model_serializer,
)

from hpo.errors import unknown_name_message
from hpo.registry import Registry


class AugmentStep(BaseModel):
    """One transform and its parameters; subclasses narrow ``name``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # finite ranges only

    name: str
    # Off drops the step from the pipeline while keeping its settings in the config, so that
    # ``search: {data.augment.<name>.enabled: {choices: [true, false]}}`` can switch it.
    enabled: bool = True

    @model_serializer(mode="wrap")
    def _enabled_only_when_off(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A trial's recorded config reads as before the flag existed unless a step is off, so
        # configs of older trials still equal new ones (warm starts compare them).
        data: dict[str, Any] = handler(self)
        if self.enabled:
            data.pop("enabled", None)
        return data


def _range(v: list[float], low: float, high: float | None = None) -> list[float]:
    """A ``[min, max]`` pair inside ``[low, high]``. (The spec's error line shows the value.)"""
    if len(v) != 2 or v[0] > v[1]:
        raise ValueError("expected [min, max] with min <= max")
    if v[0] < low or (high is not None and v[1] > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"expected values >= {low}{upper}")
    return v


class HFlip(AugmentStep):
    name: Literal["hflip"] = "hflip"
    p: float = Field(0.5, ge=0, le=1)  # chance an image is mirrored left-right


class VFlip(AugmentStep):
    name: Literal["vflip"] = "vflip"
    p: float = Field(0.5, ge=0, le=1)  # chance an image is flipped upside down


class Rotation(AugmentStep):
    name: Literal["rotation"] = "rotation"
    degrees: float = Field(15.0, ge=0, le=180)  # angle drawn from [-degrees, degrees]


class Affine(AugmentStep):
    name: Literal["affine"] = "affine"
    degrees: float = Field(0.0, ge=0, le=180)  # rotation drawn from [-degrees, degrees]
    translate: float = Field(0.1, ge=0, le=0.5)  # shift per axis, up to this fraction of the side
    scale: list[float] = [0.9, 1.1]  # zoom factor drawn from [min, max]

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: list[float]) -> list[float]:
        if v and v[0] <= 0:
            raise ValueError("expected zoom factors > 0")
        return _range(v, 0.0)


class RandomCrop(AugmentStep):
    name: Literal["random_crop"] = "random_crop"
    padding: int = Field(4, ge=1)  # pixels added on each side before cropping back to size
    padding_mode: Literal["reflect", "zeros"] = "reflect"  # reflect needs padding < image side


class RandomErasing(AugmentStep):
    name: Literal["random_erasing"] = "random_erasing"
    p: float = Field(0.5, ge=0, le=1)  # chance an image gets one erased rectangle
    scale: list[float] = [0.02, 0.33]  # erased area, as a fraction of the image
    ratio: list[float] = [0.3, 3.3]  # aspect ratio (height / width) of the rectangle

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: list[float]) -> list[float]:
        return _range(v, 0.0, 1.0)

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: list[float]) -> list[float]:
        if v and v[0] <= 0:
            raise ValueError("expected aspect ratios > 0")
        return _range(v, 0.0)


class ColorJitter(AugmentStep):
    """Brightness, contrast and (three-channel images only) saturation, each drawn from
    ``[1 - x, 1 + x]`` per image; pixels are clipped to the data's range."""

    name: Literal["color_jitter"] = "color_jitter"
    brightness: float = Field(0.2, ge=0, le=1)
    contrast: float = Field(0.2, ge=0, le=1)
    saturation: float = Field(0.2, ge=0, le=1)  # ignored for one-channel images


AUGMENTATIONS = Registry[type[AugmentStep]]("augmentation")
for _cls in (HFlip, VFlip, Rotation, Affine, RandomCrop, RandomErasing, ColorJitter):
    AUGMENTATIONS.add(_cls.model_fields["name"].default, _cls)

AugmentName = Literal[
    "hflip", "vflip", "rotation", "affine", "random_crop", "random_erasing", "color_jitter"
]
assert set(AugmentName.__args__) == set(AUGMENTATIONS.names())  # type: ignore[attr-defined]


def _named(value: Any) -> Any:
    """A bare name is the transform with its defaults; an unknown name says what is known."""
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict) and "name" in value and value["name"] not in AUGMENTATIONS:
        raise ValueError(unknown_name_message("augmentation", value["name"], AUGMENTATIONS.names()))
    return value


_Step = Annotated[
    Union[HFlip, VFlip, Rotation, Affine, RandomCrop, RandomErasing, ColorJitter],  # noqa: UP007
    Field(discriminator="name"),
]
# In the schema a list item is a name or a mapping; validation turns a name into a mapping.
_Item = Annotated[
    _Step,
    BeforeValidator(_named, json_schema_input_type=Union[AugmentName, _Step]),  # noqa: UP007
]


def _shape(value: Any) -> str:
    return "list" if isinstance(value, list | tuple) else "name"


# The type of ``data.augment``: a preset or one name (so ``search: {data.augment: {choices:
# [none, light, strong]}}`` works), or a list of steps. Told apart by shape, so a mistake in
# a list is reported once, at the item, rather than also as "not a preset".
AugmentSpec = Annotated[
    Union[  # noqa: UP007
        Annotated[Literal["none", "light", "strong", AugmentName], Tag("name")],
        Annotated[list[_Item], Tag("list")],
    ],
    Discriminator(_shape),
]


def resolve_augment(
    value: str | Sequence[AugmentStep], in_shape: tuple[int, int, int]
) -> list[AugmentStep]:
    """The enabled steps a preset, name or list stands for, at this image size (crop padding
    is 1/8 of it)."""
    if not isinstance(value, str):
        return [step for step in value if step.enabled]
    pad = max(1, round(min(in_shape[1:]) / 8))  # 4 px at 32 px, as the CIFAR recipes use
    light: list[AugmentStep] = [HFlip(), RandomCrop(padding=pad)]
    presets: dict[str, list[AugmentStep]] = {
        "none": [],
        "light": light,
        "strong": [*light, Rotation(degrees=10), ColorJitter(), RandomErasing(p=0.25)],
    }
    if value in presets:
        return presets[value]
    return [AUGMENTATIONS.get(value).model_validate({})]

