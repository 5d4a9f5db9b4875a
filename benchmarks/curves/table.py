"""The recorded table (digits_cnn.npz, written by record.py) as arrays with lookups.

Arrays, by configuration c (space.configurations() order), seed s (space.SEEDS) and epoch e
(0-based: epoch e + 1): val_accuracy, val_loss, train_loss, wall_seconds, cpu_seconds
[c, s, e] float32, NaN after a run failed (non-finite loss); failed [c, s] bool; params [c].
``meta`` (JSON) repeats the space, fixed sections, seeds and epochs it was recorded with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.curves import space

TABLE = Path(__file__).parent / "digits_cnn.npz"
ARRAYS = ("val_accuracy", "val_loss", "train_loss", "wall_seconds", "cpu_seconds")
CHANCE = 0.1  # ten classes: what a failed run's accuracy counts as in a mean


@dataclass(frozen=True)
class CurveTable:
    configs: list[dict[str, Any]]
    val_accuracy: np.ndarray
    val_loss: np.ndarray
    train_loss: np.ndarray
    wall_seconds: np.ndarray
    cpu_seconds: np.ndarray
    failed: np.ndarray
    params: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = TABLE) -> CurveTable:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            return cls(configs=meta["configs"], meta=meta, failed=data["failed"], params=data["params"],
                       **{name: data[name] for name in ARRAYS})

    def save(self, path: Path) -> None:
        """Write the table as ``load`` reads it (compressed: the shipped file is ~2 MB)."""
        meta = {**self.meta, "configs": self.configs}
        np.savez_compressed(path, meta=np.array(json.dumps(meta)), failed=self.failed, params=self.params,
                            **{name: getattr(self, name) for name in ARRAYS})

    @property
    def epochs(self) -> int:
        return int(self.val_accuracy.shape[2])

    @property
    def n_seeds(self) -> int:
        return int(self.val_accuracy.shape[1])

    @cached_property
    def values(self) -> dict[str, tuple[Any, ...]]:
        """The values each hyperparameter takes in this table (a slice may hold fewer)."""
        return {name: tuple(v for v in choices if any(c.get(name) == v for c in self.configs))
                for name, choices in space.VALUES.items()}

    @cached_property
    def _index(self) -> dict[tuple, int]:
        return {space.key(c): i for i, c in enumerate(self.configs)}

    def index(self, config: dict[str, Any]) -> int:
        """The row of ``config`` after snapping each value to the nearest recorded one."""
        return self._index[space.key(space.snap(config, self.values))]

    @cached_property
    def mean_final(self) -> np.ndarray:
        """Each configuration's true quality: final validation accuracy, mean over seeds
        (a failed seed counts as chance)."""
        return np.nan_to_num(self.val_accuracy[:, :, -1], nan=CHANCE).mean(axis=1)

    @property
    def best_mean(self) -> float:
        return float(self.mean_final.max())

    def slice(self, rows: list[int]) -> CurveTable:
        """A table of some configurations only (tests replay such a slice)."""
        keep = np.asarray(rows)
        return CurveTable(configs=[self.configs[i] for i in rows], meta=self.meta, failed=self.failed[keep],
                          params=self.params[keep], **{name: getattr(self, name)[keep] for name in ARRAYS})
