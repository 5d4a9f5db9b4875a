"""hpo's Python API against real (tiny) studies, run in this process: the same results as
the CLI, models that predict exactly as their trials validated, custom classes handed over
in-process, and bad input answered with typed errors."""

from __future__ import annotations

import re
import subprocess
import sys

import optuna
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import hpo
from hpo.cli.main import cli
from hpo.study.attrs import FAIL_REASON, RETRY_OF, WORKER
from tests.specs import spec_text

# A class of this test module, handed to run_worker in-process (as a notebook's own class
# would be): the spec names it by its import path.
NET_PATH = f"{__name__}:PlainNet"


class PlainNet(nn.Module):
    def __init__(self, in_shape, num_classes, width=8):
        super().__init__()
        c, h, w = in_shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A finished 3-trial digits study, run through the API alone; every trial's weights kept."""
    folder = tmp_path_factory.mktemp("api")
    spec = folder / "spec.yaml"
    spec.write_text(spec_text("api-study", n_trials=3, epochs=2))
    journal = folder / "studies.journal"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPO_KEEP_WEIGHTS", "all")
        created = hpo.create_study(spec, storage=journal)
        report = hpo.run_worker("api-study", storage=journal, device="cpu", progress=False, rank=0)
    return folder, journal, created, report


def test_import_hpo_loads_neither_torch_nor_optuna():
    code = ("import sys, hpo\n"
            "heavy = sorted(m for m in ('torch', 'optuna', 'pandas', 'pydantic') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "assert set(hpo.__all__) <= set(dir(hpo))\n"
            "print(hpo.__version__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == hpo.__version__


def test_every_public_name_resolves_with_a_docstring():
    for name in hpo.__all__:
        value = getattr(hpo, name)
        if callable(value):
            assert value.__doc__, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hpo.nope  # noqa: B018


@pytest.mark.slow
def test_create_run_and_read_a_study(tuned):
    folder, journal, created, report = tuned
    assert (created.name, created.created) == ("api-study", True)
    assert created.artifacts == str(folder / "hpo-artifacts")
    assert [o.state for o in report.outcomes] == ["complete"] * 3 and report.exit_code == 0
    results = hpo.load_results("api-study", storage=journal)
    best = results.best
    values = {t.number: t.value for t in results.trials}
    assert best.value == max(values.values()) and values[best.number] == best.value
    assert best.metric == "val_accuracy" and set(best.params) == {"train.lr"}
    assert best.config["train"]["lr"] == best.params["train.lr"]
    assert [p.number for p in results.pareto] == [best.number]
    with pytest.raises(hpo.StudyNotFoundError, match=r"no study named 'nope' in .* \(studies: api-study\)"):
        hpo.load_results("nope", storage=journal)


@pytest.mark.slow
def test_progress_in_a_log_is_one_plain_line_per_trial(tmp_path, capfd):
    journal = tmp_path / "s.journal"
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("logged", n_trials=2))
    hpo.create_study(spec, storage=journal)
    capfd.readouterr()
    hpo.run_worker("logged", storage=journal, device="cpu", rank=0)  # progress=True, stdout not a terminal
    out = capfd.readouterr().out
    assert "\x1b[" not in out  # no live display's control codes in a log
    # The rank given is shown, as hpo worker --rank shows it.
    trial_lines = [line for line in out.splitlines() if line.startswith("[worker 0] trial ")]
    assert [line.split()[3] for line in trial_lines] == ["0", "1"]
    assert all(re.search(r" complete after 1 epochs: 0\.\d{4} .*train\.lr=", line) for line in trial_lines), out
    assert "[worker 0] Device: cpu" in out


@pytest.mark.slow
def test_the_dataframe_is_the_export(tuned, tmp_path):
    _, journal, _, _ = tuned
    frame = hpo.load_results("api-study", storage=journal).dataframe()
    out = tmp_path / "trials.csv"
    result = CliRunner().invoke(cli, ["study", "export", "api-study", "--storage", str(journal), "-o", str(out)])
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(out)
    assert list(frame.columns) == list(exported.columns)
    assert list(frame["number"]) == list(exported["number"]) == [0, 1, 2]
    assert frame["value"].tolist() == pytest.approx(exported["value"].tolist())
    assert "config.train.lr" in frame.columns and "params_train.lr" in frame.columns


@pytest.mark.slow
def test_report_writes_the_pages(tuned, tmp_path):
    _, journal, _, _ = tuned
    written = hpo.load_results("api-study", storage=journal).report(tmp_path / "report")
    assert written.markdown.is_file() and written.html.is_file() and written.figures


@pytest.mark.slow
def test_a_loaded_model_predicts_as_its_trial_validated(tuned):
    _, journal, _, _ = tuned
    from hpo.spec.trial_config import TrialConfig
    from hpo.training.data import load_splits

    results = hpo.load_results("api-study", storage=journal)
    for trial in results.trials:
        model = hpo.load_model("api-study", trial=trial.number, storage=journal)
        assert not model.module.training and model.class_names == tuple(str(i) for i in range(10))
        val = load_splits(TrialConfig.from_json(trial.config).data).val
        assert val is not None
        # The raw stored pixels (0..16), preprocessed by the model's own Preprocess: the accuracy
        # equals what the trial recorded for its last epoch (the weights are the last epoch's).
        accuracy = (model.predict(val.x) == val.y).sum().item() / len(val.y)
        assert accuracy == pytest.approx(trial.curves["val_accuracy"][-1], abs=1e-9)
    best = hpo.load_model("api-study", storage=journal)
    assert best.source == f"study 'api-study', trial {results.best.number}"
    assert results.load_model().source == best.source  # the same, from the results


@pytest.mark.slow
def test_a_retrain_folder_loads_too(tuned, tmp_path):
    _, journal, _, _ = tuned
    out = tmp_path / "retrained"
    result = CliRunner().invoke(cli, ["retrain", "api-study", "--storage", str(journal), "--output", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    model = hpo.load_model(out)
    assert model.source.startswith(str(out)) and not model.module.training
    assert model.predict(torch.zeros(5, 1, 8, 8)).shape == (5,)
    with pytest.raises(hpo.UsageError, match="is a retrain folder"):
        hpo.load_model(out, trial=1)


@pytest.mark.slow
def test_a_trial_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_KEEP_WEIGHTS", "none")
    journal = tmp_path / "s.journal"
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("no-weights", n_trials=1))
    hpo.create_study(spec, storage=journal)
    hpo.run_worker("no-weights", storage=journal, device="cpu", progress=False, rank=0)
    with pytest.raises(hpo.HpoError) as caught:
        hpo.load_model("no-weights", storage=journal)
    assert str(caught.value) == ("trial 0 of 'no-weights' has no stored weights (HPO_KEEP_WEIGHTS=none); "
                                 "retrain it (hpo retrain no-weights --trial 0) and load the folder that writes")


@pytest.mark.slow
def test_a_class_handed_over_in_process_trains_and_loads(tmp_path):
    journal = tmp_path / "s.journal"
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("own-net", n_trials=1))
    hpo.create_study(spec, storage=journal, overrides={"model": {"name": "custom", "module": NET_PATH,
                                                                  "kwargs": {"width": 12}}})
    with pytest.raises(hpo.UsageError, match="is not allowed on this worker"):
        hpo.run_worker("own-net", storage=journal, device="cpu", progress=False)
    assert hpo.load_results("own-net", storage=journal).trials == []  # refused before any trial
    report = hpo.run_worker("own-net", storage=journal, device="cpu", progress=False, models=[PlainNet])
    assert [o.state for o in report.outcomes] == ["complete"]
    model = hpo.load_model("own-net", storage=journal, models={NET_PATH: PlainNet})
    assert isinstance(model.module, PlainNet) and model.module.net[1].out_features == 12


def test_classes_must_be_nameable_by_an_import_path():
    class Local(nn.Module):
        pass

    with pytest.raises(hpo.UsageError, match="not an import path"):
        hpo.run_worker("x", storage="nowhere.journal", models=[Local])
    with pytest.raises(hpo.UsageError, match="is not a class"):
        hpo.run_worker("x", storage="nowhere.journal", models={NET_PATH: PlainNet((1, 8, 8), 10)})


@pytest.mark.slow
def test_a_sole_worker_retries_what_a_gone_runtime_left_running(tmp_path):
    journal = tmp_path / "s.journal"
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("recycled", n_trials=1))
    created = hpo.create_study(spec, storage=journal)
    left = created.study.ask()  # a trial of a runtime that was recycled: another host, no heartbeat
    left.suggest_float("train.lr", 1e-4, 1e-1, log=True)  # its parameters were stored (a retry has them)
    left.set_user_attr(WORKER, {"host": "old-colab-vm", "pid": 4711, "rank": 0})
    # Without sole_worker, another host's trial may be alive: it is left alone, and it holds
    # the study's last slot, so a fresh runtime would wait for it for ever.
    plain = hpo.run_worker("recycled", storage=journal, device="cpu", progress=False)
    assert plain.outcomes == [] and "the other 1 are running in other workers" in plain.stop_reason
    assert created.study.trials[0].state == optuna.trial.TrialState.RUNNING
    swept: list[int] = []
    report = hpo.run_worker("recycled", storage=journal, device="cpu", sole_worker=True,
                            progress=lambda event, data: swept.append(data["trial"]) if event == "swept" else None)
    trials = created.study.trials
    assert swept == [0] and trials[0].state == optuna.trial.TrialState.FAIL
    assert "sole_worker=True" in trials[0].user_attrs[FAIL_REASON]
    assert trials[1].user_attrs[RETRY_OF] == 0 and trials[1].state == optuna.trial.TrialState.COMPLETE
    assert [o.number for o in report.outcomes] == [1] and len(trials) == 2


def test_bad_input_raises_typed_errors(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("bad"))
    journal = tmp_path / "s.journal"
    with pytest.raises(hpo.UsageError, match="if_exists='maybe': expected 'fail' or 'reuse'"):
        hpo.create_study(spec, storage=journal, if_exists="maybe")  # type: ignore[arg-type]
    with pytest.raises(hpo.SpecError, match="train.lr"):
        hpo.load_spec(spec, overrides={"train.lr": "fast"})
    loaded = hpo.load_spec(spec)
    with pytest.raises(hpo.UsageError, match="pass them to hpo.load_spec"):
        hpo.create_study(loaded, storage=journal, name="other")
    with pytest.raises(hpo.UsageError, match=r"s.journal does not exist \('hpo study create' creates it"):
        hpo.load_results("bad", storage=journal)
    with pytest.raises(hpo.UsageError, match="n_trials=0"):
        hpo.run_worker("bad", storage=journal, n_trials=0)
    with pytest.raises(hpo.UsageError, match="progress=3"):
        hpo.run_worker("bad", storage=journal, progress=3)  # type: ignore[arg-type]
    assert not journal.exists()  # nothing was created


def test_preprocess_takes_the_shapes_people_have():
    from hpo.api import Preprocess

    prep = Preprocess((1, 4, 4), mean=(0.5,), std=(0.25,), scale=16.0)
    one = torch.full((4, 4), 8.0)
    assert prep(one).shape == (1, 1, 4, 4) and prep(one).allclose(torch.zeros(1, 1, 4, 4))
    assert prep(torch.full((3, 4, 4), 16.0)).allclose(torch.full((3, 1, 4, 4), 2.0))
    assert prep(torch.zeros(2, 1, 8, 8)).shape == (2, 1, 4, 4)  # resized to what the model takes
    with pytest.raises(hpo.UsageError, match=r"images of shape \(2, 3, 4, 4\): the model takes 1-channel"):
        prep(torch.zeros(2, 3, 4, 4))


@pytest.mark.slow
def test_progress_in_a_notebook_without_ipywidgets_is_plain_lines(tmp_path, capfd, monkeypatch):
    """run_worker(progress=True) shows hpo worker's display on a console of its own, which rich
    finds to be a notebook's; without ipywidgets (nothing to update in place) plain lines."""
    import importlib.util

    import rich.console

    real = importlib.util.find_spec
    monkeypatch.setattr(rich.console, "_is_jupyter", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets" else real(name, *a))
    made = []
    from hpo.worker import progress as progress_module

    class Recorded(progress_module.WorkerProgress):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            made.append(self)

    monkeypatch.setattr(progress_module, "WorkerProgress", Recorded)
    journal = tmp_path / "s.journal"
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("notebook", n_trials=1))
    hpo.create_study(spec, storage=journal)
    capfd.readouterr()
    hpo.run_worker("notebook", storage=journal, device="cpu")
    [shown] = made
    assert shown.console.is_jupyter and not shown.live
    out = capfd.readouterr().out
    assert re.search(r"^trial 0 complete after 1 epochs: 0\.\d{4} \(\d+\.\d s\) \| train\.lr=", out, re.M), out


@pytest.mark.slow
def test_bad_choices_of_a_model_are_named(tuned):
    _, journal, _, _ = tuned
    with pytest.raises(hpo.UsageError, match=r"study 'api-study' has no trial 99 \(trials 0\.\.2\)"):
        hpo.load_model("api-study", trial=99, storage=journal)
    with pytest.raises(hpo.UsageError, match="unknown device 'tpu'"):
        hpo.load_model("api-study", storage=journal, device="tpu")
    with pytest.raises(hpo.UsageError, match="unknown device 'tpu'"):
        hpo.run_worker("api-study", storage=journal, device="tpu")
    with pytest.raises(hpo.SpecError, match="missing.yaml: no such file"):
        hpo.create_study("missing.yaml", storage=journal)


@pytest.mark.slow
def test_a_multi_objective_study_has_a_pareto_front_and_no_single_best(tmp_path):
    journal = tmp_path / "s.journal"
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("two-goals", n_trials=3))
    goals = [{"metric": "val_accuracy"}, {"metric": "val_loss"}]
    hpo.create_study(spec, storage=journal, overrides={"objective": goals})
    hpo.run_worker("two-goals", storage=journal, device="cpu", progress=False)
    results = hpo.load_results("two-goals", storage=journal)
    with pytest.raises(hpo.UsageError, match=r"several objectives, so no single best trial: use \.pareto"):
        results.best  # noqa: B018
    front = results.pareto
    assert front and all(len(t.values) == 2 for t in front)
    assert {t.number for t in front} == {t.number for t in results.study.best_trials}
    assert {"value_0", "value_1"} <= set(results.dataframe().columns)
