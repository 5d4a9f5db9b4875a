"""SqueezeNet's Fire module and a squeeze-and-excitation gate (imported by builders only).

Kept apart from ``models.squeezenet`` because defining ``nn.Module`` subclasses needs torch,
and the config module must stay importable without it.
"""

from __future__ import annotations

import torch
from torch import nn

from hpo.models.layers import make_activation


def _conv_bn_act(in_ch: int, out_ch: int, k: int, batch_norm: bool, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(make_activation(activation))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Rescale channels by a gate computed from their global average (Hu et al., 2018)."""

    def __init__(self, channels: int, ratio: float, activation: str):
        super().__init__()
        hidden = max(1, round(channels * ratio))
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            make_activation(activation),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class Fire(nn.Module):
    """1x1 squeeze, then parallel 1x1 and 3x3 expands concatenated: ``2 * expand`` channels.

    ``residual`` adds the input back (SqueezeNet's simple bypass) when the widths match.
    """

    def __init__(
        self,
        in_ch: int,
        squeeze: int,
        expand: int,
        *,
        batch_norm: bool,
        activation: str,
        se_ratio: float | None,
        residual: bool,
    ):
        super().__init__()
        self.squeeze = _conv_bn_act(in_ch, squeeze, 1, batch_norm, activation)
        self.expand1 = _conv_bn_act(squeeze, expand, 1, batch_norm, activation)
        self.expand3 = _conv_bn_act(squeeze, expand, 3, batch_norm, activation)
        self.se = SqueezeExcite(2 * expand, se_ratio, activation) if se_ratio else nn.Identity()
        self.residual = residual and in_ch == 2 * expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        out = self.se(torch.cat([self.expand1(s), self.expand3(s)], dim=1))
        return out + x if self.residual else out
