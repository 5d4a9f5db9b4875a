"""MLP-Mixer pieces (Tolstikhin et al., 2021), imported by the ``patch_mlp`` builder only."""

from __future__ import annotations

import torch
from torch import nn

from hpo.models.layers import make_activation


def _mlp(dim: int, hidden: int, activation: str, dropout: float, out: int | None = None) -> nn.Sequential:
    """dim -> hidden -> out (default: back to dim)."""
    return nn.Sequential(
        nn.Linear(dim, hidden), make_activation(activation), nn.Dropout(dropout),
        nn.Linear(hidden, dim if out is None else out), nn.Dropout(dropout),
    )


class TokenBatchNorm(nn.Module):
    """BatchNorm1d over the channels of (batch, tokens, dim) tensors: each channel is normalised
    over the batch and every patch. BatchNorm1d wants channels second, hence the transposes."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def make_norm(kind: str, dim: int) -> nn.Module:
    """The norm of (batch, tokens, dim) tensors; ``layer`` is a bare LayerNorm so that default
    models keep the parameter names of stored weights."""
    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "batch":
        return TokenBatchNorm(dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected layer, batch or none")


class MixerBlock(nn.Module):
    """Mix across patches (tokens), then across channels, ``dim`` -> ``out`` channels; pre-norm,
    with residuals where ``residual`` asks for them and the shapes allow."""

    def __init__(
        self, tokens: int, dim: int, token_mlp: int, channel_mlp: int, activation: str, dropout: float,
        *, out: int | None = None, norm: str = "layer", residual: bool = True,
    ):
        super().__init__()
        out = dim if out is None else out
        self.residual = residual
        self.channel_residual = residual and out == dim
        self.norm1 = make_norm(norm, dim)
        self.token_mix = _mlp(tokens, token_mlp, activation, dropout)
        self.norm2 = make_norm(norm, dim)
        self.channel_mix = _mlp(dim, channel_mlp, activation, dropout, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, tokens, dim)
        mixed = self.token_mix(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + mixed if self.residual else mixed
        mixed = self.channel_mix(self.norm2(x))
        return x + mixed if self.channel_residual else mixed


class PatchMixer(nn.Module):
    def __init__(
        self, *, in_ch: int, tokens: int, patch: int, widths: list[int], token_mlp: int, channel_mlp: int,
        norm: str, residual: bool, activation: str, dropout: float, num_classes: int,
    ):
        super().__init__()
        # A KxK convolution with stride K is the per-patch linear embedding.
        self.embed = nn.Conv2d(in_ch, widths[0], patch, stride=patch)
        ins = [widths[0], *widths[:-1]]  # block i maps the previous block's width to widths[i]
        self.blocks = nn.Sequential(*[
            MixerBlock(tokens, dim, token_mlp, channel_mlp, activation, dropout, out=out, norm=norm,
                       residual=residual)
            for dim, out in zip(ins, widths, strict=True)
        ])
        self.norm = make_norm(norm, widths[-1])
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)  # (batch, tokens, dim)
        x = self.norm(self.blocks(x)).mean(dim=1)  # global average over patches
        return self.head(self.drop(x))
