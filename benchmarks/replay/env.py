"""One replayed search: the table answers, the run keeps the account.

A strategy starts trials on configurations it proposes (snapped onto the table), trains them
epoch by epoch and ends each one as complete, pruned or failed; or, as SMAC and DEHB do,
evaluates a configuration at a budget of epochs. Each trial draws one of the table's seeds;
its epochs cost their recorded CPU seconds. A configuration evaluated again at a higher
budget continues its earlier run (same seed; only the new epochs are charged), as a user
with checkpoints would have it: the kindest account for the from-scratch tools.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.curves.table import CurveTable


@dataclass(frozen=True)
class Finished:
    """One finished trial (or evaluation), with the run's totals when it ended."""

    row: int  # the configuration's row in the table
    seed: int  # the table seed it drew
    epochs: int  # epochs it reached
    state: str  # complete | pruned | fail
    value: float | None  # validation accuracy at its last epoch (None: failed)
    full: bool  # trained all of the table's epochs: only these can be the search's pick
    run_epochs: int  # the run's epochs so far, this trial's included
    run_seconds: float


class BudgetSpent(Exception):
    """Raised by a trial's ``epoch`` once the run's budget is spent: a strategy that loops
    ``while not replay.spent`` never sees it, one that cannot be told to stop (a library's
    own optimise loop) is ended by it."""


@dataclass
class Trial:
    replay: Replay
    row: int
    seed: int
    trained: int = 0  # epochs trained so far (a continued run starts where it stopped)
    values: list[float] = field(default_factory=list)

    def epoch(self) -> float | None:
        """Train one more epoch: its validation accuracy, or None if the run failed there
        (a non-finite loss; the epoch is charged all the same)."""
        if self.trained >= self.replay.table.epochs:
            raise ValueError("the trial has trained all of the table's epochs")
        value = float(self.replay.table.val_accuracy[self.row, self.seed, self.trained])
        self.replay.charge(self.replay.epoch_seconds(self.row, self.seed, self.trained))
        self.trained += 1
        if math.isnan(value):
            return None
        self.values.append(value)
        return value

    def finish(self, state: str) -> Finished:
        full = state == "complete" and self.trained == self.replay.table.epochs
        done = Finished(self.row, self.seed, self.trained, state, self.values[-1] if self.values else None,
                        full, self.replay.epochs, self.replay.seconds)
        self.replay.finished.append(done)
        return done


@dataclass
class Replay:
    table: CurveTable
    seed: int
    epoch_budget: int
    second_budget: float = 0.0  # spent once both are
    epochs: int = 0
    seconds: float = 0.0
    finished: list[Finished] = field(default_factory=list)
    _continued: dict[int, Trial] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @property
    def spent(self) -> bool:
        return self.epochs >= self.epoch_budget and self.seconds >= self.second_budget

    def charge(self, seconds: float) -> None:
        if self.spent:
            raise BudgetSpent
        self.epochs += 1
        self.seconds += seconds

    def epoch_seconds(self, row: int, seed: int, epoch: int) -> float:
        """The recorded seconds of an epoch; the epoch a run failed in has none recorded (the
        loss went non-finite before it ended): it costs the configuration's mean epoch."""
        seconds = float(self.table.cpu_seconds[row, seed, epoch])
        return seconds if not math.isnan(seconds) else float(np.nanmean(self.table.cpu_seconds[row]))

    def start(self, config: dict[str, Any]) -> Trial:
        """A new trial of ``config`` from its first epoch, on a seed of its own."""
        return Trial(self, self.table.index(config), int(self.rng.integers(self.table.n_seeds)))

    def evaluate(self, config: dict[str, Any], epochs: int) -> float | None:
        """``config`` trained to ``epochs``: the validation accuracy there, or None if the run
        failed. A configuration evaluated before continues its run (charged only the epochs it
        had not trained); asked for epochs it has trained already, it answers from its curve
        at no cost and records no new trial."""
        row = self.table.index(config)
        trial = self._continued.get(row)
        if trial is not None and len(trial.values) < trial.trained:
            return None  # it failed before: a run past a non-finite loss stays failed
        if trial is not None and trial.trained >= epochs:
            return trial.values[epochs - 1] if len(trial.values) >= epochs else None
        if trial is None:
            trial = self._continued[row] = Trial(self, row, int(self.rng.integers(self.table.n_seeds)))
        value: float | None = None
        while trial.trained < epochs:
            value = trial.epoch()
            if value is None:
                trial.finish("fail")
                return None
        trial.finish("complete")
        return value
