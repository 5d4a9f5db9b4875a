"""Ray Tune's strategies on the replay (benchmarks/replay/ray_tune.py): Ray's own schedulers
and searchers, driven one trial at a time, on a small table with known answers."""

from __future__ import annotations

import pytest

from benchmarks.replay.env import Replay
from tests.benchmarks.fake_table import fake_table

pytest.importorskip("ray.tune")
pytest.importorskip("hpbandster")

from benchmarks.replay.ray_tune import STRATEGIES  # noqa: E402  (after the skips: Ray is optional)

TABLE = fake_table(fail_every=7)
BUDGET = 120  # six full trials' epochs
ASHA_RUNGS = {1, 4, 16}  # grace period 1, reduction factor 4, max_t 20
BOHB_RUNGS = {2, 6}  # HyperBand's rungs below the last (eta 3, max_t 20: 2, 6, 18)


def replayed(label: str, seed: int, table=TABLE, budget: int = BUDGET) -> Replay:
    replay = Replay(table, seed=seed, epoch_budget=budget)
    STRATEGIES[label](replay, seed)
    return replay


@pytest.mark.parametrize("label", sorted(STRATEGIES))
def test_a_strategy_spends_the_budget_with_complete_and_pruned_trials(label):
    replay = replayed(label, seed=1)
    states = [f.state for f in replay.finished]
    assert replay.epochs >= BUDGET
    # every epoch but those of the trial the budget ended in belongs to a finished trial
    assert sum(f.epochs for f in replay.finished) >= replay.epochs - TABLE.epochs
    assert "complete" in states and "pruned" in states
    assert all(f.full for f in replay.finished if f.state == "complete")


@pytest.mark.parametrize("label", sorted(STRATEGIES))
def test_a_run_repeats_for_its_seed(label):
    first, again, other = replayed(label, 3), replayed(label, 3), replayed(label, 4)
    assert first.finished == again.finished
    assert first.finished != other.finished


@pytest.mark.parametrize("label", ["ray-asha-random", "ray-asha-tpe", "ray-asha-bohb"])
def test_asha_stops_trials_at_its_rungs(label):
    finished = replayed(label, seed=2, budget=240).finished
    assert sum(not f.full for f in finished) > sum(f.full for f in finished)
    assert {f.epochs for f in finished if f.state == "pruned"} <= ASHA_RUNGS


def test_hyperband_for_bohb_pauses_a_bracket_and_prunes_at_its_rungs():
    finished = replayed("ray-bohb", seed=2).finished
    pruned = [f for f in finished if f.state == "pruned"]
    assert {f.epochs for f in pruned} <= BOHB_RUNGS
    # the first bracket's twelve trials all trained two epochs before eight were stopped
    first_rung = [f for f in pruned if f.epochs == 2]
    assert len(first_rung) == 8 and {f.run_epochs for f in first_rung} == {24}


@pytest.mark.parametrize("label", sorted(STRATEGIES))
def test_a_failed_run_ends_its_trial_and_the_search_goes_on(label):
    table = fake_table(fail_every=1)  # every configuration fails from epoch 4 with its first seed
    replay = replayed(label, seed=0, table=table, budget=240)
    states = [f.state for f in replay.finished]
    assert "fail" in states and replay.epochs >= 240
    assert {f.epochs for f in replay.finished if f.state == "fail"} == {4}  # ended where the run failed
