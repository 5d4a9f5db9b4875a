"""What a replayed run is judged by, from its finished trials (env.Finished, in the order
they finished): the search's pick at a budget, its regret, and when it reached a target."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from benchmarks.curves.table import CHANCE, CurveTable
from benchmarks.replay.env import Finished

QUANTILE = 0.9  # the worst decile: 90th percentile of epochs and regret, 10th of accuracy


def within(finished: Sequence[Finished], kind: str, limit: float) -> list[Finished]:
    """What finished within ``limit`` of the run's epochs (``kind`` "epochs") or seconds."""
    attribute = "run_epochs" if kind == "epochs" else "run_seconds"
    return [f for f in finished if getattr(f, attribute) <= limit * (1 + 1e-9)]


def pick(finished: Sequence[Finished]) -> Finished | None:
    """The search's test-free pick: the trial trained to the end (pruned ones never count)
    with the best observed final validation accuracy, the earliest of equals. One rule for
    every strategy (hpo's own `study best` ranks by a trial's best epoch instead; the final
    epoch is what the table's true quality, mean_final, measures)."""
    full = [f for f in finished if f.full and f.value is not None]
    return max(full, key=lambda f: f.value or 0.0) if full else None


def true_accuracy(table: CurveTable, chosen: Finished | None) -> float:
    """The pick's true quality, its mean final accuracy over the table's seeds; nothing
    picked yet counts as chance."""
    return float(table.mean_final[chosen.row]) if chosen else CHANCE


def regret(table: CurveTable, finished: Sequence[Finished]) -> float:
    return table.best_mean - true_accuracy(table, pick(finished))


def best_observed(finished: Sequence[Finished]) -> float:
    chosen = pick(finished)
    return chosen.value if chosen and chosen.value is not None else -math.inf


def epochs_to_reach(finished: Sequence[Finished], target: float) -> float:
    """The run's epochs when a full trial first observed ``target`` or better (inf: never)."""
    for f in finished:
        if f.full and f.value is not None and f.value >= target - 1e-9:
            return float(f.run_epochs)
    return math.inf


def median(values: Sequence[float]) -> float:
    return float(np.median(values))


def worst(values: Sequence[float], higher_is_worse: bool = True) -> float:
    """The worst decile's edge ('inverted_cdf': an observed value, inf where a tenth never got there)."""
    q = QUANTILE if higher_is_worse else 1 - QUANTILE
    return float(np.quantile(np.asarray(values, dtype=float), q, method="inverted_cdf"))


def epochs_to_match(table: CurveTable, finished: Sequence[Finished], quality: float) -> float:
    """The run's epochs when its pick was first at least ``quality`` good, by true mean
    accuracy (inf: never): reaching another search's final pick without the noise of the
    one seed each trial was observed with."""
    best: Finished | None = None
    for f in finished:
        if f.full and f.value is not None and (best is None or f.value > (best.value or 0.0)):
            best = f
            if table.mean_final[f.row] >= quality - 1e-9:
                return float(f.run_epochs)
    return math.inf
