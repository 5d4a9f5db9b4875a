"""benchmarks.curves.properties on small tables whose answers are known by construction:
24 configurations whose final means step by 0.01, curves that rank perfectly (or backwards)
at every epoch, seeds that agree exactly or by a known offset, seconds of a known sum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.curves import properties, space
from benchmarks.curves.table import CurveTable

CONFIGS = list(itertools.islice(space.configurations(), 24))
EPOCHS, SEEDS = 20, 3
FINALS = 0.5 + 0.01 * np.arange(len(CONFIGS))  # configuration c's final accuracy: the last is the best


def make_table(acc: np.ndarray, failed: np.ndarray | None = None, seconds: float = 0.5) -> CurveTable:
    """A table of ``acc`` [c, s, e]; each epoch took ``seconds`` of CPU and twice that of wall
    time (NaN where the accuracy is)."""
    failed = np.zeros(acc.shape[:2], dtype=bool) if failed is None else failed
    cpu = np.where(np.isnan(acc), np.nan, seconds).astype(np.float32)
    return CurveTable(configs=CONFIGS, val_accuracy=acc.astype(np.float32), val_loss=1 - acc, train_loss=1 - acc,
                      wall_seconds=2 * cpu, cpu_seconds=cpu, failed=failed,
                      params=1000 + np.arange(len(CONFIGS)), meta={"epochs": acc.shape[2]})


def rising_curves(seed_offset: float = 0.0) -> np.ndarray:
    """Configuration c climbs linearly to FINALS[c]; seed s is shifted by (s - 1) x offset."""
    shape = np.arange(1, EPOCHS + 1) / EPOCHS
    offsets = (np.arange(SEEDS) - 1) * seed_offset
    return FINALS[:, None, None] * shape[None, None, :] + offsets[None, :, None]


def test_spread_gives_percentiles_shares_near_the_best_failures_and_the_best_configurations():
    acc = rising_curves()
    failed = np.zeros((len(CONFIGS), SEEDS), dtype=bool)
    failed[0, 0] = True  # the worst configuration's first seed fails after epoch 4
    acc[0, 0, 4:] = np.nan
    s = properties.spread(make_table(acc, failed))
    # The failed seed counts as chance: (0.1 + 0.5 + 0.5) / 3.
    assert s.percentiles[0] == pytest.approx(1.1 / 3, abs=1e-6)
    assert s.percentiles[100] == pytest.approx(0.73, abs=1e-6)
    assert s.percentiles[50] == pytest.approx(0.615, abs=1e-6)  # between the 12th and 13th of 24
    assert s.near_best == pytest.approx({0.01: 2 / 24, 0.02: 3 / 24, 0.05: 6 / 24})
    assert (s.failed_runs, s.runs, s.failed_configs) == (1, 72, 1)
    assert [row for row, _, _ in s.best] == [23, 22, 21, 20, 19]
    assert s.best[0][1] == pytest.approx(0.73, abs=1e-6) and s.best[0][2] == 1023


def test_curves_that_rank_alike_at_every_epoch_correlate_perfectly_and_keep_the_top():
    ranks = properties.early_ranking(make_table(rising_curves()))
    assert [r.epoch for r in ranks] == list(properties.EARLY_EPOCHS)
    for r in ranks:
        assert r.spearman_all == pytest.approx(1.0) and r.spearman_top == pytest.approx(1.0)
        assert r.top_kept == 1.0


def test_an_epoch_that_ranks_backwards_correlates_at_minus_one_and_a_rung_drops_the_top():
    acc = rising_curves()
    acc[:, :, 0] = 1 - FINALS[:, None]  # epoch 1: the best are the worst
    first = properties.early_ranking(make_table(acc))[0]
    assert first.epoch == 1
    assert first.spearman_all == pytest.approx(-1.0) and first.spearman_top == pytest.approx(-1.0)
    assert first.top_kept == 0.0
    assert len(properties.top_rows(make_table(acc))) == 3  # 10 % of 24, rounded up


def test_a_rung_keeps_the_top_third_of_the_ranking():
    at_epoch = np.arange(24, dtype=float)  # row 23 ranks first; a rung keeps 24 // 3 = 8
    assert properties.kept_by_rung(at_epoch, np.array([23, 16, 10])) == pytest.approx(2 / 3)  # ranks 1, 8, 14
    tied = np.r_[np.zeros(16), np.ones(8) * 0.5]
    tied[0] = 0.5  # nine tied for first: all kept, as a tie-break would be arbitrary
    assert properties.kept_by_rung(tied, np.array([0, 23])) == 1.0


def test_identical_seeds_have_no_noise_and_agree_perfectly():
    n = properties.seed_noise(make_table(rising_curves()))
    assert n.std_median == 0 and n.std_p90 == 0 and n.std_median_best == 0
    assert n.seed_spearman == pytest.approx(1.0)
    assert n.gap_to_nth == pytest.approx(0.09, abs=1e-6)  # 0.73 - 0.64


def test_seeds_offset_by_a_known_amount_have_that_std():
    n = properties.seed_noise(make_table(rising_curves(seed_offset=0.02)))
    # Seeds at -0.02, 0, +0.02 of the mean: a sample std of 0.02.
    assert n.std_median == pytest.approx(0.02, abs=1e-6) and n.std_p90 == pytest.approx(0.02, abs=1e-6)
    assert n.seed_spearman == pytest.approx(1.0)


def test_recorded_seconds_sum_the_epochs_and_leave_failed_runs_out_of_full_trials():
    acc = rising_curves()
    failed = np.zeros((len(CONFIGS), SEEDS), dtype=bool)
    failed[5, 2] = True
    acc[5, 2, 4:] = np.nan  # four epochs recorded
    s = properties.recorded_seconds(make_table(acc, failed))
    assert s.cpu_total == pytest.approx(0.5 * (72 * EPOCHS - 16))
    assert s.wall_per_cpu == pytest.approx(2.0)
    assert s.full_trial_median == s.full_trial_min == s.full_trial_max == pytest.approx(10.0)


def test_the_command_reads_a_saved_table_and_writes_every_section(tmp_path, capsys):
    path = tmp_path / "table.npz"
    make_table(rising_curves(seed_offset=0.01)).save(path)
    output = tmp_path / "properties.md"
    properties.main(["--table", str(path), "--output", str(output)])
    text = output.read_text()
    assert text.strip() == capsys.readouterr().out.strip()
    assert "24 configurations × 3 seeds × 20 epochs" in text
    for heading in ("Spread of final accuracies", "Early epochs against the last", "Noise between seeds",
                    "Recorded seconds"):
        assert f"### {heading}" in text
    assert "| 20 | 1.000 | 1.000 | 100% |" in text
    with pytest.raises(SystemExit):
        properties.main(["--table", str(tmp_path / "missing.npz")])
