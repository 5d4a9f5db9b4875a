"""The replay's account (benchmarks/replay/env.py) and judgement (analysis.py) on a small table
with known answers, and hpo's own strategies through it (optuna_hpo.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.curves import space
from benchmarks.replay import analysis
from benchmarks.replay.env import BudgetSpent, Replay
from benchmarks.replay.optuna_hpo import search_section
from benchmarks.replay.strategies import strategy
from tests.benchmarks.fake_table import fake_table

TABLE = fake_table(fail_every=7)


def test_a_trial_is_charged_its_recorded_epochs_and_answered_from_its_seed():
    replay = Replay(TABLE, seed=0, epoch_budget=100)
    trial = replay.start(TABLE.configs[5])
    values = [trial.epoch() for _ in range(4)]
    assert values == pytest.approx(TABLE.val_accuracy[5, trial.seed, :4].tolist())
    assert replay.epochs == 4
    assert replay.seconds == pytest.approx(float(TABLE.cpu_seconds[5, trial.seed, :4].sum()))
    done = trial.finish("pruned")
    assert (done.epochs, done.state, done.full, done.run_epochs) == (4, "pruned", False, 4)


def test_proposals_are_snapped_onto_the_table():
    config = {**TABLE.configs[0], "train.lr": 1.1e-4, "train.batch_size": 40, "model.dropout": 0.05}
    assert Replay(TABLE, 0, 10).start(config).row == 0


def test_a_failed_run_answers_none_and_its_last_epoch_still_costs():
    row = 7  # fails with its first seed from epoch 4
    replay = Replay(TABLE, seed=0, epoch_budget=100)
    trial = replay.start(TABLE.configs[row])
    trial.seed = 0
    assert [trial.epoch() is None for _ in range(4)] == [False, False, False, True]
    assert replay.epochs == 4 and math.isfinite(replay.seconds) and replay.seconds > 0


def test_evaluating_at_a_higher_budget_continues_the_earlier_run():
    replay = Replay(TABLE, seed=0, epoch_budget=100)
    config = TABLE.configs[3]
    low = replay.evaluate(config, 3)
    high = replay.evaluate(config, 9)
    seed = replay.finished[0].seed
    assert replay.epochs == 9  # 3, then 6 more
    assert (low, high) == pytest.approx((TABLE.val_accuracy[3, seed, 2], TABLE.val_accuracy[3, seed, 8]))
    assert [f.epochs for f in replay.finished] == [3, 9]


def test_the_budget_is_spent_at_both_epochs_and_seconds():
    replay = Replay(TABLE, seed=0, epoch_budget=2, second_budget=1e9)
    trial = replay.start(TABLE.configs[1])
    trial.epoch(), trial.epoch()
    assert not replay.spent  # the seconds are not spent yet
    replay.second_budget = 0.0
    assert replay.spent
    with pytest.raises(BudgetSpent):
        trial.epoch()


def test_the_pick_is_the_best_observed_full_trial_and_its_regret_is_its_true_gap():
    replay = Replay(TABLE, seed=0, epoch_budget=1000)
    best_row = int(np.argmax(TABLE.mean_final))
    for row in (10, best_row, 20):
        replay.evaluate(TABLE.configs[row], TABLE.epochs)
    replay.evaluate(TABLE.configs[30], 5)  # not full: never the pick
    chosen = analysis.pick(replay.finished)
    assert chosen is not None and chosen.row == best_row
    assert analysis.regret(TABLE, replay.finished) == pytest.approx(0.0)
    assert analysis.regret(TABLE, replay.finished[:1]) == pytest.approx(TABLE.best_mean - TABLE.mean_final[10])
    assert analysis.regret(TABLE, []) == pytest.approx(TABLE.best_mean - 0.1)  # nothing picked: chance
    assert analysis.epochs_to_reach(replay.finished, 2.0) == math.inf
    assert analysis.epochs_to_reach(replay.finished, chosen.value) == 2 * TABLE.epochs


def test_hpo_reads_the_replayed_space_as_a_users_spec():
    section = search_section(TABLE.values)
    assert section["train.lr"] == {"low": 1e-4, "high": 2.56e-2, "log": True}
    assert section["train.momentum"] == {"choices": [0.8, 0.95], "when": {"train.optimizer": "sgd"}}
    assert set(section) == set(space.VALUES)


@pytest.mark.parametrize("label", ["default", "random-full", "tpe+median"])
def test_hpo_strategies_spend_the_budget_reproducibly(label):
    def finished(seed: int):
        replay = Replay(TABLE, seed=seed, epoch_budget=300)
        strategy(label)(replay, seed)
        return replay

    first, again = finished(3), finished(3)
    assert first.finished == again.finished
    assert first.epochs >= 300 and sum(f.epochs for f in first.finished) >= first.epochs - TABLE.epochs
    states = {f.state for f in first.finished}
    if label == "random-full":
        assert states <= {"complete", "fail"} and all(f.epochs == TABLE.epochs for f in first.finished
                                                       if f.state == "complete")
    else:
        assert "pruned" in states  # the pruner stops trials early
