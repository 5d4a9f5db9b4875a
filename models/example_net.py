"""An example custom model: a small SqueezeNet-style network of Fire modules with
squeeze-and-excitation gates. Copy this file into your project and change it.

A spec names it by import path (see README.md in this folder):

    model:
      name: custom
      module: models.example_net:SEFireNet
      kwargs: {width: 32, n_blocks: 2}

A worker imports it only when allowed: ``hpo worker NAME --allow-module models --module-path .``
from the folder that holds ``models/``.

The worker passes ``in_shape (channels, height, width) and ``num_classes`` from the data,
because the constructor asks for them; everything else comes from ``model.kwargs``.
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """Scales each channel by a gate computed from the whole feature map."""

    def __init__(self, channels: int, ratio: float = 0.25):
        super().__init__()
        hidden = max(1, int(channels * ratio))
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class Fire(nn.Module):
    """Squeeze to a few channels with 1x1 convolutions, then expand with 1x1 and 3x3 side by side."""

    def __init__(self, in_channels: int, squeeze: int, expand: int, se_ratio: float):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(in_channels, squeeze, 1), nn.ReLU(inplace=True))
        self.expand1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.post = nn.Sequential(nn.BatchNorm2d(2 * expand), nn.ReLU(inplace=True))
        self.se = SqueezeExcite(2 * expand, se_ratio) if se_ratio > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return self.se(self.post(torch.cat([self.expand1(s), self.expand3(s)], dim=1)))


class SEFireNet(nn.Module):
    """A stem convolution, ``n_blocks`` Fire modules (each doubling the width, with a 2x2 max
    pool after each while the map is larger than 2x2), global average pooling and a linear head.

    Works for any input size: 8x8 digits, 28x28 MNIST, 32x32 CIFAR or larger.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 16,  # channels after the stem; each block doubles it
        n_blocks: int = 2,
        squeeze_ratio: float = 0.25,  # squeeze channels as a share of the block's input
        se_ratio: float = 0.25,  # SE bottleneck as a share of the channels; 0 turns SE off
        dropout: float = 0.0,  # before the head
    ):
        super().__init__()
        channels, height, _ = in_shape
        layers: list[nn.Module] = [
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        size = height
        for _ in range(n_blocks):
            layers.append(Fire(width, max(1, int(width * squeeze_ratio)), width, se_ratio))
            width *= 2
            if size > 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
