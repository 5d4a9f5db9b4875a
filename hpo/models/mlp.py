"""Multi-layer perceptron on flattened images: the cheapest baseline worth tuning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator

from hpo.models.layers import Activation, Width, check_sizes, make_activation, per_layer
from hpo.models.registry import ModelConfig, register_model

if TYPE_CHECKING:
    from torch import nn


class MLPConfig(ModelConfig):
    name: Literal["mlp"] = "mlp"
    n_layers: int = Field(2, ge=1, le=16)  # hidden layers
    width: Width | list[Width] = 128  # one width for all hidden layers, or one per layer
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_norm: bool = False

    @field_validator("width")
    @classmethod
    def _check_width(cls, v: int | list[int], info: ValidationInfo) -> int | list[int]:
        # n_layers is declared first, so it is already in info.data when it was valid.
        return check_sizes(v, info.data.get("n_layers"), "width", "n_layers")

    def widths(self) -> list[int]:
        """One width per hidden layer."""
        return per_layer(self.width, self.n_layers, "width", "n_layers")


@register_model("mlp", MLPConfig)
def build_mlp(cfg: MLPConfig, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    from torch import nn

    c, h, w = in_shape
    layers: list[nn.Module] = [nn.Flatten()]
    prev = c * h * w
    for width in cfg.widths():
        # BatchNorm's own shift makes the Linear bias redundant.
        layers.append(nn.Linear(prev, width, bias=not cfg.batch_norm))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(make_activation(cfg.activation))
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        prev = width
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)
