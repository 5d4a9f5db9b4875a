"""A worker keeps one CPU thread count for its whole life (issue 14, comparable timings).

The same configuration once ran at 3.9, 20.6 and 17.8 s/epoch in one study because each trial
got the cores ÷ the workers live at its start (recorded ``cpu_threads`` 1, 2, 2). Here the
live-worker count the registry reports changes between trials; the threads must not."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hpo.errors import UsageError
from hpo.spec import load_spec
from hpo.storage.urls import resolve_storage
from hpo.study.attrs import CPU_THREADS
from hpo.study.studies import create_study
from hpo.worker import threads
from hpo.worker.pool import plan_slots
from tests.specs import trials_of, write_spec


@pytest.fixture(autouse=True)
def eight_cores(tmp_path, monkeypatch):
    """A private worker registry on a machine of 8 cores, torch's threads put back after."""
    import torch

    monkeypatch.setattr(threads.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def comings_and_goings(monkeypatch, counts: list[int]):
    """The live workers the registry reports: ``counts[0]`` at the worker's start, then the
    next count after each trial (as if other workers started and stopped meanwhile); and a
    stand-in trainer that moves to the next count as each trial ends."""
    live = list(counts)
    monkeypatch.setattr(threads, "live_workers", lambda: live[0])

    def trainer(data, model, train, *, device, reporter, checkpoints=None, stop_requested=None):
        from hpo.training.metrics import EpochMetrics, TrainingResult

        metrics = EpochMetrics(epoch=1, train_loss=1.0, val_loss=1.0, val_accuracy=0.5, seconds=0.1, lr=train.lr)
        reporter.report(metrics)
        if len(live) > 1:
            live.pop(0)
        return TrainingResult(history=[metrics], pruned=False, stopped_early=False, params_trainable=1,
                              params_total=1, seconds_per_epoch=0.1, device=device, seed=0,
                              peak_memory_mb=None, images_per_second=10.0, precision="fp32")

    return trainer


def run_trials(tmp_path, trainer, n_trials: int, **worker_options) -> list[int]:
    """Run ``n_trials`` trials of a tiny digits study in one worker; the cpu_threads each recorded."""
    from hpo.worker.loop import run_worker

    storage = str(tmp_path / "studies.journal")
    create_study(load_spec(write_spec(tmp_path, "threads", n_trials=n_trials)), resolve_storage(storage),
                 artifacts=str(tmp_path / "artifacts"))
    report = run_worker("threads", resolve_storage(storage), device="cpu", trainer=trainer, **worker_options)
    assert len(report.outcomes) == n_trials, report.stop_reason
    return [trial.user_attrs[CPU_THREADS] for trial in trials_of("threads", storage)]


def test_the_thread_count_stays_while_other_workers_come_and_go(tmp_path, monkeypatch):
    import torch

    # 2 workers live at the start (8 cores: 4 threads each); then 4, 1 and 8 workers.
    trainer = comings_and_goings(monkeypatch, [2, 4, 1, 8])
    assert run_trials(tmp_path, trainer, n_trials=4) == [4, 4, 4, 4]
    assert torch.get_num_threads() == 4


def test_an_explicit_thread_count_is_kept_and_recorded(tmp_path, monkeypatch):
    trainer = comings_and_goings(monkeypatch, [1, 4, 2])
    assert run_trials(tmp_path, trainer, n_trials=3, threads=3) == [3, 3, 3]


def test_hpo_threads_sets_the_count_when_no_option_does(tmp_path, monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "2")
    trainer = comings_and_goings(monkeypatch, [1, 8])
    assert run_trials(tmp_path, trainer, n_trials=2) == [2, 2]


def test_the_count_is_chosen_once_from_the_machine_and_its_workers(monkeypatch):
    monkeypatch.setattr(threads, "live_workers", lambda: 3)
    assert threads.choose_threads() == 2  # 8 cores, 3 workers: 2 each (never more than the cores)
    monkeypatch.setattr(threads, "live_workers", lambda: 20)
    assert threads.choose_threads() == 1  # at least one
    assert threads.choose_threads(5) == 5


@pytest.mark.parametrize("given", [0, -2])
def test_a_thread_count_below_one_is_refused(given):
    with pytest.raises(UsageError) as caught:
        threads.choose_threads(given)
    assert str(caught.value) == f"--threads {given}: expected a number of threads >= 1"


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_a_bad_hpo_threads_is_refused_not_ignored(monkeypatch, text):
    monkeypatch.setenv(threads.ENV_VAR, text)
    with pytest.raises(UsageError) as caught:
        threads.choose_threads()
    assert str(caught.value) == f"HPO_THREADS={text}: expected a number of threads >= 1"


def test_more_threads_than_cores_is_allowed_with_a_warning(capsys):
    assert threads.choose_threads(12) == 12
    assert capsys.readouterr().err == (
        "Warning: --threads 12 is more than the 8 cores this worker may use: its threads will "
        "wait for each other and every epoch slows down\n")
    assert threads.choose_threads(8) == 8
    assert capsys.readouterr().err == ""


def test_the_cli_refuses_zero_threads():
    from hpo.cli.main import cli

    result = CliRunner().invoke(cli, ["worker", "some-study", "--threads", "0"])
    assert result.exit_code == 2
    assert "Invalid value for '--threads': 0 is not in the range x>=1." in result.output


def test_the_pool_divides_the_cores_among_its_children():
    def thread_args(slots):
        return [slot.args[slot.args.index("--threads") + 1] for slot in slots]

    assert thread_args(plan_slots("s", rank=0, processes=3, device="cpu")) == ["2", "2", "2"]
    assert thread_args(plan_slots("s", rank=0, processes=2, device="cpu")) == ["4", "4"]
    assert thread_args(plan_slots("s", rank=0, processes=16, device="cpu")) == ["1"] * 16
    gpus = plan_slots("s", rank=0, gpus=[0, 1], per_gpu=2, environ={})
    assert thread_args(gpus) == ["2"] * 4
    assert thread_args(plan_slots("s", rank=0, processes=2, device="cpu", threads=3)) == ["3", "3"]


def test_workers_on_one_machine_say_when_their_threads_oversubscribe_it(monkeypatch, capsys):
    """Independent workers each chose their share at their start: later ones can push the
    total past the cores. The worker keeps its count (comparable timings) and says so once."""
    with threads.registered_worker():
        assert threads.fix_threads(6) == 6
        assert capsys.readouterr().err == ""  # alone: 6 of 8 cores
        monkeypatch.setattr(threads, "claimed_threads", lambda: 6 + 4)  # a worker of 4 joined
        threads.keep_threads()
        threads.keep_threads()
        assert threads.worker_threads() == 6
    assert capsys.readouterr().err == (
        "Warning: the hpo workers on this machine use 10 threads on 8 cores: epochs slow down "
        "and timings stop being comparable; give each worker --threads (or HPO_THREADS) so "
        "that they add up to the cores, or start them with --processes K\n")


def test_a_worker_leaves_its_thread_count_in_the_registry():
    with threads.registered_worker():
        threads.fix_threads(3)
        assert threads.claimed_threads() == 3
    assert threads.claimed_threads() == 0


def test_the_cores_available_follow_a_cgroup_quota(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # docker --cpus 1.5
    assert threads.cgroup_cpu_quota(cpu_max) == 1
    cpu_max.write_text("400000 100000\n")
    assert threads.cgroup_cpu_quota(cpu_max) == 4
    cpu_max.write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(cpu_max) is None
    assert threads.cgroup_cpu_quota(tmp_path / "absent") is None


def test_images_per_second_and_seconds_per_epoch_share_one_definition():
    """Both time the training pass of an epoch (validation excluded): their product is the
    training images of one epoch, whatever the validation split costs."""
    from hpo.models import MLPConfig
    from hpo.training import DataConfig, TrainConfig, train_model
    from hpo.training.data import load_splits

    data = DataConfig(val_fraction=0.5)  # a large validation split: its time would show
    result = train_model(data, MLPConfig(n_layers=1, width=32), TrainConfig(epochs=2))
    train_images = len(load_splits(data, "cpu").train)
    assert result.images_per_second * result.seconds_per_epoch == pytest.approx(train_images, rel=1e-6)
    assert result.seconds_per_epoch < sum(m.seconds for m in result.history) / len(result.history)
