"""Patch MLP ("MLP-Mixer"): the image cut into KxK patches, mixed by MLPs only, no convolutions
beyond the patch embedding."""

from __future__ import annotations

from math import gcd
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from hpo.models.layers import Activation
from hpo.models.registry import ModelConfig, register_model

if TYPE_CHECKING:
    from torch import nn


class PatchMLPConfig(ModelConfig):
    name: Literal["patch_mlp"] = "patch_mlp"
    patch_size: int = Field(4, ge=1, le=64)  # K: KxK patches; must divide the image side
    depth: int = Field(4, ge=1, le=32)  # mixer blocks
    hidden: int = Field(128, ge=1, le=4096)  # channels per patch (embedding width)
    token_mlp: int = Field(64, ge=1, le=8192)  # hidden width of the across-patches MLP
    channel_mlp: int = Field(256, ge=1, le=16384)  # hidden width of the across-channels MLP
    dropout: float = Field(0.0, ge=0, lt=1)  # inside both MLPs and before the classifier
    activation: Activation = "gelu"


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
        channels, tokens, k, cfg.hidden, cfg.depth, cfg.token_mlp, cfg.channel_mlp,
        cfg.activation, cfg.dropout, num_classes,
    )
