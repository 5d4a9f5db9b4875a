"""A plain VGG-style CNN: conv blocks (conv, batch norm, activation, pool), then a small head."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from hpo.models.layers import (
    MAX_WIDTH,
    Activation,
    Width,
    check_sizes,
    conv_out_size,
    grown_sizes,
    make_activation,
    per_layer,
    same_padding,
)
from hpo.models.registry import ModelConfig, register_model

if TYPE_CHECKING:
    from torch import nn


class CNNConfig(ModelConfig):
    name: Literal["cnn"] = "cnn"
    n_blocks: int = Field(2, ge=1, le=8)  # conv blocks
    filters: Width | list[Width] = 32  # one count for every block, or one per block
    filters_growth: float = Field(1.0, ge=0.25, le=4)  # filters x this per block (int filters)
    kernel_size: int = Field(3, ge=1, le=11)  # square kernel
    stride: int = Field(1, ge=1, le=4)  # convolution stride
    # "same": output = ceil(input / stride); "valid": no padding; or pixels on each side
    padding: Literal["same", "valid"] | Annotated[int, Field(ge=0, le=16)] = "same"
    dilation: int = Field(1, ge=1, le=8)  # spacing between kernel taps
    pool: Literal["max", "avg", "none"] = "max"  # after each block, while the map is that big
    pool_size: int = Field(2, ge=2, le=4)  # pooling window and stride
    batch_norm: bool = True  # after each convolution
    dropout: float = Field(0.0, ge=0, lt=1)  # before each fully-connected layer
    fc_width: int = Field(128, ge=0, le=MAX_WIDTH)  # 0: no hidden fully-connected layer
    activation: Activation = "relu"

    @field_validator("filters")
    @classmethod
    def _check_filters(cls, v: int | list[int], info: ValidationInfo) -> int | list[int]:
        # n_blocks is declared first, so it is already in info.data when it was valid.
        return check_sizes(v, info.data.get("n_blocks"), "filters", "n_blocks")

    @field_validator("filters_growth")
    @classmethod
    def _growth_needs_one_count(cls, v: float, info: ValidationInfo) -> float:
        if v != 1 and isinstance(info.data.get("filters"), list):
            raise ValueError(
                f"filters_growth {v} grows a single filters count, but filters is a list; "
                "give one count or set filters_growth to 1"
            )
        return v

    def filters_per_block(self) -> list[int]:
        if isinstance(self.filters, int):
            return grown_sizes(self.filters, self.filters_growth, self.n_blocks)
        return per_layer(self.filters, self.n_blocks, "filters", "n_blocks")


def _conv(
    cfg: CNNConfig, in_ch: int, out_ch: int, h: int, w: int, block: int, image: tuple[int, int]
) -> tuple[list[nn.Module], int, int]:
    """One convolution with the configured padding, and the (h, w) it produces.

    Uneven "same" padding (even kernels) is explicit, with the extra row/column at the end as
    PyTorch's ``padding="same"`` does, because that option warns, copies the input and
    rejects strides above 1.
    """
    from torch import nn

    k, s, d = cfg.kernel_size, cfg.stride, cfg.dilation
    if cfg.padding == "same":
        (top, bottom), (left, right) = same_padding(h, k, s, d), same_padding(w, k, s, d)
    else:
        top = bottom = left = right = 0 if cfg.padding == "valid" else int(cfg.padding)
    out_h = conv_out_size(h, k, s, d, top + bottom)
    out_w = conv_out_size(w, k, s, d, left + right)
    if out_h < 1 or out_w < 1:
        from hpo.errors import TrainingError

        raise TrainingError(
            f"{cfg.n_blocks} conv blocks shrink the {image[0]}x{image[1]} image below 1x1 "
            f"(block {block}: {h}x{w} -> {max(out_h, 0)}x{max(out_w, 0)} with kernel_size {k}, "
            f"stride {s}, padding {cfg.padding}, dilation {d}); use fewer n_blocks, stride 1, "
            "a smaller kernel_size or dilation, or padding same"
        )
    bias = not cfg.batch_norm  # BatchNorm's own shift makes the bias redundant
    layers: list[nn.Module] = []
    if top == bottom and left == right:
        layers.append(nn.Conv2d(in_ch, out_ch, k, s, (top, left), d, bias=bias))
    else:
        layers += [nn.ZeroPad2d((left, right, top, bottom)), nn.Conv2d(in_ch, out_ch, k, s, 0, d, bias=bias)]
    return layers, out_h, out_w


@register_model("cnn", CNNConfig)
def build_cnn(cfg: CNNConfig, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    from torch import nn

    channels, h, w = in_shape
    layers: list[nn.Module] = []
    for block, filters in enumerate(cfg.filters_per_block(), start=1):
        conv, h, w = _conv(cfg, channels, filters, h, w, block, in_shape[1:])
        layers += conv
        if cfg.batch_norm:
            layers.append(nn.BatchNorm2d(filters))
        layers.append(make_activation(cfg.activation))
        # Pool only while there is something to pool: 8x8 digits survive 4+ blocks (8-4-2-1-1).
        if cfg.pool != "none" and min(h, w) >= cfg.pool_size:
            size = cfg.pool_size
            layers.append(nn.MaxPool2d(size) if cfg.pool == "max" else nn.AvgPool2d(size))
            h, w = h // size, w // size
        channels = filters

    layers.append(nn.Flatten())
    if cfg.dropout > 0:
        layers.append(nn.Dropout(cfg.dropout))
    features = channels * h * w
    if cfg.fc_width > 0:
        layers += [nn.Linear(features, cfg.fc_width), make_activation(cfg.activation)]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        features = cfg.fc_width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)
