"""SqueezeNet-style networks of Fire modules, with optional squeeze-and-excitation, sized for
small images (8x8 digits, 28x28, 32x32) as well as large ones.

Unlike the 224x224 original (stride-2 7x7 stem, three pools), the stem stride and the pooling
interval are settings, and every pool rounds up, so even a 1x1 map is never pooled away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator

from hpo.models.layers import Activation, Width, check_sizes, make_activation, per_layer
from hpo.models.registry import ModelConfig, register_model

if TYPE_CHECKING:
    from torch import nn


class SqueezeNetConfig(ModelConfig):
    name: Literal["squeezenet"] = "squeezenet"
    stem: int = Field(64, ge=1, le=1024)  # filters of the stem convolution
    stem_kernel: int = Field(3, ge=1, le=11)  # stem kernel size
    stem_stride: int = Field(1, ge=1, le=4)  # 1 keeps small images whole; 2+ for 64 px and up
    n_fire: int = Field(6, ge=1, le=16)  # Fire modules
    squeeze: Width | list[Width] = 16  # 1x1 squeeze filters: one for all modules, or one per module
    expand: Width | list[Width] = 64  # filters of each expand branch (1x1 and 3x3): 2x this out
    growth: float = Field(1.0, ge=0.25, le=4)  # int squeeze/expand x this after each pool
    pool_every: int = Field(2, ge=0, le=16)  # 3x3 stride-2 max pool after every N modules; 0: none
    se: bool = False  # squeeze-and-excitation gate on each Fire module's output
    se_ratio: float = Field(0.25, gt=0, le=1)  # SE bottleneck width / channels
    residual: bool = False  # add the input to Fire modules whose input and output widths match
    batch_norm: bool = True  # after every convolution (the original has none)
    dropout: float = Field(0.0, ge=0, lt=1)  # before the linear classifier
    activation: Activation = "relu"

    @field_validator("squeeze", "expand")
    @classmethod
    def _check_widths(cls, v: int | list[int], info: ValidationInfo) -> int | list[int]:
        return check_sizes(v, info.data.get("n_fire"), info.field_name or "", "n_fire")

    @field_validator("growth")
    @classmethod
    def _growth_needs_one_count(cls, v: float, info: ValidationInfo) -> float:
        lists = [k for k in ("squeeze", "expand") if isinstance(info.data.get(k), list)]
        if v != 1 and lists:
            raise ValueError(
                f"growth {v} grows single widths, but {' and '.join(lists)} "
                f"{'is a list' if len(lists) == 1 else 'are lists'}; "
                "give one width or set growth to 1"
            )
        return v

    def stage_of(self, module: int) -> int:
        """How many pools come before Fire module ``module`` (0-based)."""
        return module // self.pool_every if self.pool_every else 0

    def pools_after(self, module: int) -> bool:
        """Pool between stages only: never after the last module (the head pools globally)."""
        return bool(self.pool_every) and (module + 1) % self.pool_every == 0 and module + 1 < self.n_fire

    def widths(self, key: Literal["squeeze", "expand"]) -> list[int]:
        value = self.squeeze if key == "squeeze" else self.expand
        if isinstance(value, list):
            return per_layer(value, self.n_fire, key, "n_fire")
        return [max(1, round(value * self.growth ** self.stage_of(i))) for i in range(self.n_fire)]


@register_model("squeezenet", SqueezeNetConfig)
def build_squeezenet(cfg: SqueezeNetConfig, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    from torch import nn

    from hpo.models._fire_layers import Fire

    channels = in_shape[0]
    k = cfg.stem_kernel
    layers: list[nn.Module] = [
        # padding k // 2 with any stride gives ceil(size / stride) for odd k: never below 1x1.
        nn.Conv2d(channels, cfg.stem, k, cfg.stem_stride, k // 2, bias=not cfg.batch_norm)
    ]
    if cfg.batch_norm:
        layers.append(nn.BatchNorm2d(cfg.stem))
    layers.append(make_activation(cfg.activation))
    channels = cfg.stem
    for i, (squeeze, expand) in enumerate(zip(cfg.widths("squeeze"), cfg.widths("expand"))):
        layers.append(Fire(
            channels, squeeze, expand, batch_norm=cfg.batch_norm, activation=cfg.activation,
            se_ratio=cfg.se_ratio if cfg.se else None, residual=cfg.residual,
        ))
        channels = 2 * expand
        if cfg.pools_after(i):
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))  # ceil(size / 2), 1x1 stays
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if cfg.dropout > 0:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(channels, num_classes))
    return nn.Sequential(*layers)
