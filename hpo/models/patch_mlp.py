"""Patch MLP ("MLP-Mixer"): the image cut into KxK patches, mixed by MLPs only, no convolutions
beyond the patch embedding.

``hidden`` is the width of each block's output (one number: every block; a list: one per
block, the first also the embedding's width), so block i maps ``hidden[i-1]`` channels to
``hidden[i]``: its across-patches MLP and its norms work at the input width, and its
across-channels MLP changes the width. ``residual`` adds a block's input to each MLP's output
wherever the two have the same shape: always for the across-patches MLP, and for the
across-channels MLP of blocks that keep their width (a projection would add parameters the
plain list does not ask for).
"""

from __future__ import annotations

from math import gcd
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from hpo.models.layers import Activation, check_sizes, per_layer
from hpo.models.registry import ModelConfig, register_model

if TYPE_CHECKING:
    from torch import nn


PatchWidth = Annotated[int, Field(ge=1, le=4096)]


class PatchMLPConfig(ModelConfig):
    name: Literal["patch_mlp"] = "patch_mlp"
    patch_size: int = Field(4, ge=1, le=64)  # K: KxK patches; must divide the image side
    depth: int = Field(4, ge=1, le=32)  # mixer blocks
    # channels per patch: one width for every block, or each block's output width
    hidden: PatchWidth | list[PatchWidth] = 128
    token_mlp: int = Field(64, ge=1, le=8192)  # hidden width of the across-patches MLP
    channel_mlp: int = Field(256, ge=1, le=16384)  # hidden width of the across-channels MLP
    # before each MLP and the classifier: LayerNorm (the paper's), BatchNorm1d per channel, none
    norm: Literal["layer", "batch", "none"] = "layer"
    residual: bool = True  # add each MLP's input to its output where the shapes match
    dropout: float = Field(0.0, ge=0, lt=1)  # inside both MLPs and before the classifier
    activation: Activation = "gelu"

    @field_validator("hidden")
    @classmethod
    def _check_hidden(cls, v: int | list[int], info: ValidationInfo) -> int | list[int]:
        # depth is declared first, so it is already in info.data when it was valid.
        return check_sizes(v, info.data.get("depth"), "hidden", "depth")

    def widths(self) -> list[int]:
        """Each block's output width."""
        return per_layer(self.hidden, self.depth, "hidden", "depth")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@register_model("patch_mlp", PatchMLPConfig)
def build_patch_mlp(cfg: PatchMLPConfig, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    from hpo.models._mixer_layers import PatchMixer

    channels, h, w = in_shape
    k = cfg.patch_size
    if h % k or w % k:
        from hpo.errors import TrainingError

        fits = ", ".join(map(str, _divisors(gcd(h, w))))
        raise TrainingError(f"patch_size {k} does not divide the {h}x{w} image; use one of {fits}")
    tokens = (h // k) * (w // k)
    return PatchMixer(
        in_ch=channels, tokens=tokens, patch=k, widths=cfg.widths(), token_mlp=cfg.token_mlp,
        channel_mlp=cfg.channel_mlp, norm=cfg.norm, residual=cfg.residual,
        activation=cfg.activation, dropout=cfg.dropout, num_classes=num_classes,
    )
