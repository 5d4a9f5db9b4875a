"""``hpo study confirm``: the best configurations trained again with new seeds, on the same
split, through the trial's own training path; mean ± std per configuration, Welch's t-test
against the pick, and the pick recorded for ``hpo retrain``."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import hpo
from hpo.cli.main import cli
from hpo.results.summary import ranked_trials
from hpo.spec.trial_config import TrialConfig
from hpo.storage.urls import resolve_storage
from hpo.study.attrs import CONFIG, CONFIRMATION, StudyRecord
from hpo.study.studies import load_study
from tests.specs import spec_text

NAME = "confirm-digits"
N_TRIALS = 3


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def ok(*args: str) -> Any:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A finished digits study: 3 complete trials of a 1x16 MLP, 2 epochs, lr searched."""
    root = tmp_path_factory.mktemp("confirm")
    journal = str(root / "studies.journal")
    (root / "spec.yaml").write_text(spec_text(NAME, n_trials=N_TRIALS, epochs=2))
    ok("study", "create", str(root / "spec.yaml"), "--storage", journal, "--artifacts", str(root / "artifacts"))
    ok("worker", NAME, "--rank", "0", "--quiet", "--storage", journal)
    return journal, root


def loaded(journal: str):
    return load_study(NAME, resolve_storage(journal))


def recorded(journal: str) -> dict[str, Any] | None:
    return StudyRecord.from_attrs(loaded(journal).study.user_attrs).confirmation


def test_confirm_reports_the_mean_and_std_of_what_it_recorded(study):
    journal, _ = study
    before = loaded(journal)
    top2 = ranked_trials(before.study, before.study.get_trials(deepcopy=False))[:2]

    result = ok("study", "confirm", NAME, "--top", "2", "--seeds", "2", "--storage", journal, "--device", "cpu")

    record = recorded(journal)
    assert record is not None
    assert [c["trial"] for c in record["candidates"]] == [t.number for t in top2]
    assert record["metric"] == "val_accuracy" and record["direction"] == "maximize"
    for candidate, trial in zip(record["candidates"], top2):
        assert candidate["original"] == trial.value
        assert candidate["seeds"] == [trial.seed + 1, trial.seed + 2]  # new seeds, the trial's own left out
        values = candidate["values"]
        assert len(values) == 2 == candidate["n"]
        mean, std = statistics.fmean(values), statistics.stdev(values)
        assert candidate["mean"] == pytest.approx(mean) and candidate["std"] == pytest.approx(std)
        row = next(line for line in result.output.splitlines()
                   if "│" in line and line.split("│")[1].strip() == str(trial.number))
        assert f"{trial.value:.4f}" in row and f"{mean:.4f} ± {std:.4f}" in row and "│ 2 " in row
    means = {c["trial"]: c["mean"] for c in record["candidates"]}
    assert record["pick"] == max(means, key=means.__getitem__)
    pick = next(c for c in record["candidates"] if c["trial"] == record["pick"])
    assert pick["p_value"] is None and pick["within_noise"] is None
    other = next(c for c in record["candidates"] if c["trial"] != record["pick"])
    assert 0.0 <= other["p_value"] <= 1.0 and other["within_noise"] == (other["p_value"] >= record["alpha"])
    assert record["test"] == "welch"
    # Progress while it trains, then the pick and how retrain uses it.
    assert "[1/4] trial" in result.output and "[4/4] trial" in result.output
    assert f"Pick: trial {record['pick']}" in result.output
    assert f"hpo retrain {NAME} now retrains trial {record['pick']} by default" in result.output
    assert "Welch" in result.output  # the legend says which test marks differences as noise


def test_a_recorded_value_is_what_the_trials_own_training_gives_for_that_seed(study):
    """The per-seed numbers come from hpo's training path on the trial's split: training the
    stored config with that seed again gives the same validation accuracy."""
    from hpo.training import train_model

    journal, _ = study
    if recorded(journal) is None:
        ok("study", "confirm", NAME, "--top", "1", "--seeds", "2", "--storage", journal, "--device", "cpu")
    record = recorded(journal)
    assert record is not None
    candidate = record["candidates"][0]
    trial = next(t for t in loaded(journal).study.trials if t.number == candidate["trial"])
    config = TrialConfig.from_json(trial.user_attrs["config"])
    train = config.train.model_copy(update={"seed": candidate["seeds"][1]})
    result = train_model(config.data, config.model, train, device="cpu")
    assert max(m.val_accuracy for m in result.history) == candidate["values"][1]


def test_retrain_uses_the_recorded_pick_by_default_and_trial_overrides(study, tmp_path):
    journal, _ = study
    ranked = ranked_trials(loaded(journal).study, loaded(journal).study.get_trials(deepcopy=False))
    worst = ranked[-1].number  # never the search's best: retrain can only have it from the record
    record = recorded(journal) or {}
    target = loaded(journal)
    target.study.set_user_attr(CONFIRMATION, {**record, "pick": worst, "timestamp": "2026-01-01T00:00:00+00:00"})

    result = ok("retrain", NAME, "--storage", journal, "--device", "cpu", "--output", str(tmp_path / "a"))
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["trial"] == worst
    assert (f"trial {worst} is the pick of 'hpo study confirm' (2026-01-01T00:00:00+00:00); "
            "--trial N retrains another") in result.output

    best = ranked[0].number
    ok("retrain", NAME, "--storage", journal, "--device", "cpu", "--trial", str(best), "--output", str(tmp_path / "b"))
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["trial"] == best


def test_top_beyond_the_completed_trials_confirms_them_all(study):
    journal, _ = study
    lines: list[str] = []
    confirmation = hpo.confirm(NAME, storage=journal, top=10, seeds=2, device="cpu", say=lines.append)
    assert len(confirmation.candidates) == N_TRIALS
    assert f"Note: the study has {N_TRIALS} completed trials, fewer than --top 10: confirming all {N_TRIALS}" in lines
    assert recorded(journal) == confirmation.as_attr()
    assert confirmation.pick in {c.trial for c in confirmation.candidates}


def test_ctrl_c_records_nothing(study, monkeypatch):
    import hpo.training

    journal, _ = study
    before = recorded(journal)
    real = hpo.training.train_model
    calls = []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(hpo.training, "train_model", interrupted_second)
    result = invoke("study", "confirm", NAME, "--top", "2", "--seeds", "2", "--storage", journal, "--device", "cpu")
    assert result.exit_code == 130
    assert result.output.splitlines()[-1] == "Error: interrupted after 1 of 4 trainings: nothing recorded"
    assert recorded(journal) == before


def test_a_training_that_raises_is_a_failed_seed_with_its_reason_and_the_rest_is_recorded(study, monkeypatch):
    """Out of memory (or any other error) in one training fails that seed of that
    configuration, named as a worker names it; the other trainings count all the same."""
    import torch

    import hpo.training

    journal, _ = study
    real = hpo.training.train_model
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if len(calls) == 3:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")
        return real(*args, **kwargs)

    monkeypatch.setattr(hpo.training, "train_model", failing)
    lines: list[str] = []
    confirmation = hpo.confirm(NAME, storage=journal, top=3, seeds=2, device="cpu", say=lines.append)
    assert len(calls) == 6  # every training ran
    first, second, third = confirmation.candidates
    batch_size = TrialConfig.from_json(loaded(journal).study.trials[first.trial].user_attrs[CONFIG]).train.batch_size
    assert first.failed == {str(first.seeds[1]): f"out of memory at batch_size={batch_size}"}
    assert second.failed == {str(second.seeds[0]): "RuntimeError: cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"}
    assert not third.failed and len(third.values) == 2 and confirmation.pick == third.trial
    oom_line = f"[2/6] trial {first.trial}, seed {first.seeds[1]}: failed: out of memory at batch_size={batch_size}"
    assert oom_line in lines
    assert recorded(journal) == confirmation.as_attr()


def test_a_study_without_a_complete_trial_gets_one_error_line(tmp_path):
    journal = str(tmp_path / "s.journal")
    (tmp_path / "spec.yaml").write_text(spec_text("empty"))
    ok("study", "create", str(tmp_path / "spec.yaml"), "--storage", journal)
    result = invoke("study", "confirm", "empty", "--storage", journal)
    assert result.exit_code == 1
    assert result.output == "Error: study 'empty' has no completed trial yet; run workers first\n"


def test_a_multi_objective_study_is_refused_in_one_line(tmp_path):
    journal = str(tmp_path / "s.journal")
    text = spec_text("two").replace(
        "objective: {metric: val_accuracy, direction: maximize}",
        "objective: [{metric: val_accuracy, direction: maximize}, {metric: params, direction: minimize}]")
    (tmp_path / "spec.yaml").write_text(text)
    ok("study", "create", str(tmp_path / "spec.yaml"), "--storage", journal)
    result = invoke("study", "confirm", "two", "--storage", journal)
    assert result.exit_code == 2
    assert result.output == (
        "Error: study 'two' has several objectives (val_accuracy, params): confirm re-checks a ranking "
        "by one objective; retrain a Pareto-optimal trial with 'hpo retrain two --trial N --seeds 3'\n")


def test_one_seed_is_refused():
    result = invoke("study", "confirm", NAME, "--seeds", "1")
    assert result.exit_code == 2
    assert "--seeds" in result.output and "1" in result.output


def test_the_pick_is_the_best_mean_of_configurations_that_trained_on_every_seed():
    from hpo.results.confirm import ALPHA, Candidate, _compare, welch_p_value

    steady = Candidate(3, 0.95, [1, 2, 3], values=[0.95, 0.96, 0.94])
    lucky = Candidate(7, 0.97, [1, 2, 3], values=[0.90, 0.97, 0.80])
    fragile = Candidate(5, 0.99, [1, 2, 3], values=[0.99, 0.99], failed={"3": "loss diverged"})
    assert _compare([lucky, steady, fragile], maximize=True) == 3  # fragile's higher mean does not count
    assert steady.p_value is None and fragile.p_value is None
    assert lucky.p_value == pytest.approx(welch_p_value(steady.values, lucky.values))
    assert lucky.within_noise == (lucky.p_value >= ALPHA)
    assert _compare([Candidate(1, 0.5, [1, 2], values=[0.3, 0.4]), Candidate(2, 0.4, [1, 2], values=[0.5, 0.6])],
                    maximize=False) == 1  # a loss: the lower mean


def test_welch_p_value_is_scipys_and_handles_seeds_without_variance():
    from scipy.stats import ttest_ind

    from hpo.results.confirm import welch_p_value

    a, b = [0.95, 0.96, 0.94], [0.90, 0.97, 0.80]
    assert welch_p_value(a, b) == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p_value([0.9, 0.9], [0.9, 0.9]) == 1.0
    assert welch_p_value([0.9, 0.9], [0.8, 0.8]) == 0.0
