"""A small curves table of the shipped table's schema, with known answers: configuration c
converges to a quality of its own (the first is the best), a few runs fail part way."""

from __future__ import annotations

import numpy as np

from benchmarks.curves import space
from benchmarks.curves.table import CurveTable


def fake_table(epochs: int = space.EPOCHS, seeds: int = 3, fail_every: int = 0, noise: float = 0.01) -> CurveTable:
    """Every configuration of space.VALUES; ``fail_every`` n: configuration n, 2n, ... fails
    with its first seed from epoch 4 (0: none fails)."""
    configs = list(space.configurations())
    rng = np.random.default_rng(0)
    quality = np.linspace(0.95, 0.15, len(configs))[rng.permutation(len(configs))]
    rate = rng.uniform(0.1, 0.8, len(configs))
    t = np.arange(1, epochs + 1)
    curve = quality[:, None] * (1 - np.exp(-rate[:, None] * t[None, :]))
    acc = np.clip(curve[:, None, :] + rng.normal(0, noise, (len(configs), seeds, epochs)), 0, 1).astype(np.float32)
    failed = np.zeros((len(configs), seeds), dtype=bool)
    if fail_every:
        failed[fail_every::fail_every, 0] = True
        acc[failed, 3:] = np.nan
    seconds = np.repeat(rng.uniform(0.01, 0.05, len(configs))[:, None, None], seeds, 1).repeat(epochs, 2)
    seconds = np.where(np.isnan(acc), np.nan, seconds).astype(np.float32)
    return CurveTable(configs=configs, val_accuracy=acc, val_loss=(1 - acc), train_loss=(1 - acc),
                      wall_seconds=seconds, cpu_seconds=seconds, failed=failed,
                      params=rng.integers(1000, 60000, len(configs)), meta={"epochs": epochs})
