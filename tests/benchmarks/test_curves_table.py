"""The shipped curves table (benchmarks/curves/digits_cnn.npz): its schema, what it was
recorded with, and a replay of a tiny slice of it through search_replay's own runner."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks import search_replay
from benchmarks.curves import space
from benchmarks.curves.table import ARRAYS, TABLE, CurveTable
from benchmarks.replay import analysis
from tests.project.test_benchmarks import markdown_rows, run_tiny

CONFIGS = list(space.configurations())


@pytest.fixture(scope="module")
def table() -> CurveTable:
    return CurveTable.load(TABLE)


def test_the_table_is_compact_and_holds_every_configuration_seed_and_epoch(table):
    assert TABLE.stat().st_size < 5e6
    shape = (len(CONFIGS), len(space.SEEDS), space.EPOCHS)
    assert all(getattr(table, name).shape == shape and getattr(table, name).dtype == np.float32 for name in ARRAYS)
    assert table.failed.shape == shape[:2] and table.params.shape == shape[:1]
    assert table.configs == CONFIGS  # the order the space enumerates
    assert table.meta["data"] == space.DATA and table.meta["seeds"] == list(space.SEEDS)
    assert table.meta["space"] == {name: list(values) for name, values in space.VALUES.items()}
    assert len({space.key(c) for c in table.configs}) == len(CONFIGS)


def test_values_are_accuracies_losses_and_seconds_and_nan_only_after_a_failure(table):
    recorded = ~np.isnan(table.val_accuracy)
    # A run is recorded from its first epoch until the end, or until it failed.
    assert np.array_equal(recorded.all(axis=2), ~table.failed)
    assert np.all(np.diff(recorded.astype(int), axis=2) <= 0)
    for name in ARRAYS:
        assert np.array_equal(~np.isnan(getattr(table, name)), recorded), name
    acc = table.val_accuracy[recorded]
    assert acc.min() >= 0 and acc.max() <= 1
    assert table.val_loss[recorded].min() >= 0
    assert table.cpu_seconds[recorded].min() > 0 and table.wall_seconds[recorded].min() > 0
    assert table.params.min() > 0
    # The task separates configurations: chance-level ones and ones near the top.
    assert table.mean_final.min() < 0.3 and table.best_mean > 0.85


def test_seeds_differ_but_agree(table):
    final = np.nan_to_num(table.val_accuracy[:, :, -1], nan=0.1)
    assert not np.array_equal(final[:, 0], final[:, 1])  # train.seed was used
    assert np.corrcoef(final[:, 0], final[:, 1])[0, 1] > 0.8


def tiny_slice(table: CurveTable) -> CurveTable:
    """120 configurations: every lr, batch size, optimiser and depth; the rest fixed."""
    fixed = {"model.filters": 8, "model.kernel_size": 3, "model.dropout": 0.0, "model.init": "default"}
    rows = [i for i, c in enumerate(table.configs) if all(c[k] == v for k, v in fixed.items())]
    return table.slice(rows)


def test_a_tiny_slice_replays_with_hpos_default_and_random_search(table, tmp_path: Path):
    small = tiny_slice(table)
    assert len(small.configs) == 120
    path = tmp_path / "slice.npz"
    small.save(path)
    budget = 5 * small.epochs
    runs = [search_replay.replay(search_replay.Job(label, seed, path, budget, 0.0))
            for label in ("random-full", "default") for seed in (0, 1)]
    for run in runs:
        assert sum(f.epochs for f in run.finished) >= budget - small.epochs
        chosen = analysis.pick(run.finished)
        assert chosen is not None and chosen.value == small.val_accuracy[chosen.row, chosen.seed, -1]
        assert 0 <= analysis.regret(small, run.finished) <= small.best_mean
        last = run.finished[-1]
        assert math.isclose(last.run_seconds, sum(float(np.nansum(small.cpu_seconds[f.row, f.seed, :f.epochs]))
                                                  for f in run.finished), rel_tol=1e-4)
    assert any(f.state == "pruned" for r in runs if r.label == "default" for f in r.finished)


@pytest.mark.slow
@pytest.mark.subprocess
def test_search_replay_runs_every_strategy_on_a_tiny_setting(tmp_path):
    from benchmarks.replay.strategies import LABELS

    _, output = run_tiny(tmp_path, "search_replay")
    shares = " | ".join(f"regret at {name} E" for name, _ in search_replay.FRACTIONS)
    rows = markdown_rows(output, f"| strategy | {shares} |")
    assert [row[0] for row in rows] == [search_replay.REFERENCE] + [x for x in LABELS if x != search_replay.REFERENCE]
    number = r"\d+\.\d{3} \(\d+\.\d{3}\)"
    assert all(re.fullmatch(number, cell) for row in rows for cell in row[1:])
    verdict = r"Default to random search's final best \(observed\): median \d+\.\d\d ≤ 0.125: (not )?met"
    assert re.search(verdict, output)
    assert "Peers with a lower median regret than the default: " in output
