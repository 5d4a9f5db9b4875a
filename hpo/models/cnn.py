"""A plain VGG-style CNN: conv blocks (conv, batch norm, activation, pool), then a small head.

Every convolution setting takes one value for all blocks or a list with one value per block,
so a search can tune them per layer (``repeat: model.n_blocks``), as Talos-style scans do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple

from pydantic import Field, ValidationInfo, field_validator

from hpo.models.layers import (
    MAX_WIDTH,
    Activation,
    Width,
    check_per_layer,
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


Kernel = Annotated[int, Field(ge=1, le=11)]  # square kernel
Stride = Annotated[int, Field(ge=1, le=4)]
# "same": output = ceil(input / stride); "valid": no padding; or pixels on each side
Padding = Literal["same", "valid"] | Annotated[int, Field(ge=0, le=16)]
Dilation = Annotated[int, Field(ge=1, le=8)]  # spacing between kernel taps
Pool = Literal["max", "avg", "none"]


class ConvBlock(NamedTuple):
    """The settings of one conv block, each from its own key's single value or list."""

    filters: int
    kernel_size: int
    stride: int
    padding: Literal["same", "valid"] | int
    dilation: int
    pool: Pool


class CNNConfig(ModelConfig):
    name: Literal["cnn"] = "cnn"
    n_blocks: int = Field(2, ge=1, le=8)  # conv blocks
    filters: Width | list[Width] = 32  # one count for every block, or one per block
    filters_growth: float = Field(1.0, ge=0.25, le=4)  # filters x this per block (int filters)
    # These five: one value for every block, or one per block.
    kernel_size: Kernel | list[Kernel] = 3
    stride: Stride | list[Stride] = 1  # convolution stride
    padding: Padding | list[Padding] = "same"
    dilation: Dilation | list[Dilation] = 1
    pool: Pool | list[Pool] = "max"  # after each block, while the map is that big
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

    @field_validator("kernel_size", "stride", "padding", "dilation", "pool")
    @classmethod
    def _check_per_block(cls, v: object, info: ValidationInfo) -> object:
        return check_per_layer(v, info.data.get("n_blocks"), info.field_name or "", "n_blocks")

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

    def blocks(self) -> list[ConvBlock]:
        """Each block's settings, single values repeated to every block."""
        n = self.n_blocks
        pools: list[Pool] = per_layer(self.pool, n, "pool", "n_blocks")  # keeps the Literal type
        return [
            ConvBlock(*settings)
            for settings in zip(
                self.filters_per_block(),
                per_layer(self.kernel_size, n, "kernel_size", "n_blocks"),
                per_layer(self.stride, n, "stride", "n_blocks"),
                per_layer(self.padding, n, "padding", "n_blocks"),
                per_layer(self.dilation, n, "dilation", "n_blocks"),
                pools,
                strict=True,
            )
        ]


def _conv(
    cfg: CNNConfig, spec: ConvBlock, in_ch: int, h: int, w: int, block: int, image: tuple[int, int]
) -> tuple[list[nn.Module], int, int]:
    """One convolution with the configured padding, and the (h, w) it produces.

    Uneven "same" padding (even kernels) is explicit, with the extra row/column at the end as
    PyTorch's ``padding="same"`` does, because that option warns, copies the input and
    rejects strides above 1.
    """
    from torch import nn

    k, s, d, out_ch = spec.kernel_size, spec.stride, spec.dilation, spec.filters
    if spec.padding == "same":
        (top, bottom), (left, right) = same_padding(h, k, s, d), same_padding(w, k, s, d)
    else:
        top = bottom = left = right = 0 if spec.padding == "valid" else int(spec.padding)
    out_h = conv_out_size(h, k, s, d, top + bottom)
    out_w = conv_out_size(w, k, s, d, left + right)
    if out_h < 1 or out_w < 1:
        from hpo.errors import TrainingError

        raise TrainingError(
            f"{cfg.n_blocks} conv blocks shrink the {image[0]}x{image[1]} image below 1x1 "
            f"(block {block}: {h}x{w} -> {max(out_h, 0)}x{max(out_w, 0)} with kernel_size {k}, "
            f"stride {s}, padding {spec.padding}, dilation {d}); use fewer n_blocks, stride 1, "
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
    for number, block in enumerate(cfg.blocks(), start=1):
        conv, h, w = _conv(cfg, block, channels, h, w, number, in_shape[1:])
        layers += conv
        if cfg.batch_norm:
            layers.append(nn.BatchNorm2d(block.filters))
        layers.append(make_activation(cfg.activation))
        # Pool only while there is something to pool: 8x8 digits survive 4+ blocks (8-4-2-1-1).
        if block.pool != "none" and min(h, w) >= cfg.pool_size:
            size = cfg.pool_size
            layers.append(nn.MaxPool2d(size) if block.pool == "max" else nn.AvgPool2d(size))
            h, w = h // size, w // size
        channels = block.filters

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
