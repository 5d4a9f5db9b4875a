"""MLP-Mixer pieces (Tolstikhin et al., 2021), imported by the ``patch_mlp`` builder only."""

from __future__ import annotations

import torch
from torch import nn

from hpo.models.layers import make_activation


def _mlp(dim: int, hidden: int, activation: str, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden), make_activation(activation), nn.Dropout(dropout),
        nn.Linear(hidden, dim), nn.Dropout(dropout),
    )


class MixerBlock(nn.Module):
    """Mix across patches (tokens), then across channels; pre-norm residuals."""

    def __init__(self, tokens: int, dim: int, token_mlp: int, channel_mlp: int, activation: str, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mix = _mlp(tokens, token_mlp, activation, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mix = _mlp(dim, channel_mlp, activation, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, tokens, dim)
        x = x + self.token_mix(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mix(self.norm2(x))


class PatchMixer(nn.Module):
    def __init__(
        self, in_ch: int, tokens: int, patch: int, dim: int, depth: int,
        token_mlp: int, channel_mlp: int, activation: str, dropout: float, num_classes: int,
    ):
        super().__init__()
        # A KxK convolution with stride K is the per-patch linear embedding.
        self.embed = nn.Conv2d(in_ch, dim, patch, stride=patch)
        self.blocks = nn.Sequential(*[
            MixerBlock(tokens, dim, token_mlp, channel_mlp, activation, dropout) for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)  # (batch, tokens, dim)
        x = self.norm(self.blocks(x)).mean(dim=1)  # global average over patches
        return self.head(self.drop(x))
