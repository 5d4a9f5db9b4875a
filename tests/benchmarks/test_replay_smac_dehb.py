"""SMAC3's and DEHB's strategies on the replay (benchmarks/replay/smac_dehb.py), on the small
table of known answers: each spends its budget through Hyperband's whole-epoch budgets,
reaches the full one, repeats itself for a seed and leaves no file behind."""

from __future__ import annotations

import tempfile

import pytest

from benchmarks.curves.table import CurveTable
from benchmarks.replay import smac_dehb
from benchmarks.replay.env import Replay
from tests.benchmarks.fake_table import fake_table

TABLE = fake_table(fail_every=7)
HYPERBAND_EPOCHS = {2, 7, 20}  # eta 3 from 20 epochs: 20/9, 20/3 and 20, rounded


def replayed(label: str, seed: int = 0, epoch_budget: int = 60, table: CurveTable = TABLE) -> Replay:
    replay = Replay(table, seed=seed, epoch_budget=epoch_budget)
    smac_dehb.STRATEGIES[label](replay, seed)
    return replay


def test_the_configspace_is_the_replayed_space_with_momentum_for_sgd_only():
    cs = smac_dehb.configspace(TABLE.values, seed=0)
    assert set(cs) == set(smac_dehb.space.ranges(TABLE.values))
    for configuration in cs.sample_configuration(50):
        config = smac_dehb.table_config(configuration, TABLE.values)
        assert ("train.momentum" in config) == (config["train.optimizer"] == "sgd")
        assert all(type(v) in (int, float, str) for v in config.values())  # no numpy scalars
        TABLE.index(config)  # on the table once snapped


def test_budgets_round_to_whole_epochs_and_a_failed_run_costs_zero_accuracy():
    assert [smac_dehb.whole_epochs(b) for b in (20 / 9, 20 / 3, 20.0, 0.3)] == [2, 7, 20, 1]
    assert smac_dehb.cost(None) == 1.0
    assert smac_dehb.cost(0.75) == pytest.approx(0.25)


@pytest.mark.parametrize("label", sorted(smac_dehb.STRATEGIES))
def test_a_strategy_spends_its_budget_at_hyperbands_budgets_and_reaches_the_full_one(label):
    replay = replayed(label)
    assert replay.spent and replay.epochs == 60
    reached = {f.epochs for f in replay.finished if f.state != "fail"}
    assert reached <= HYPERBAND_EPOCHS and len(reached) >= 2
    assert any(f.full for f in replay.finished)


@pytest.mark.parametrize("label", sorted(smac_dehb.STRATEGIES))
def test_a_strategy_goes_on_past_failed_runs(label):
    failing = fake_table(fail_every=1)  # every configuration but the first fails on its first seed
    replay = replayed(label, table=failing)
    assert replay.spent and any(f.state == "fail" for f in replay.finished)


@pytest.mark.parametrize("label", sorted(smac_dehb.STRATEGIES))
def test_a_strategy_repeats_itself_for_a_seed(label):
    # smac-bohb only within one process (one PYTHONHASHSEED): see the module's docstring.
    def trace(replay: Replay) -> list[tuple[int, int, int, str]]:
        return [(f.row, f.seed, f.epochs, f.state) for f in replay.finished]

    assert trace(replayed(label, seed=3)) == trace(replayed(label, seed=3))
    assert trace(replayed(label, seed=3)) != trace(replayed(label, seed=4))


@pytest.mark.parametrize("label", sorted(smac_dehb.STRATEGIES))
def test_a_strategy_leaves_no_file_behind(label, tmp_path, monkeypatch):
    work, temp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    replayed(label, epoch_budget=30)
    assert list(work.iterdir()) == [] and list(temp.iterdir()) == []
