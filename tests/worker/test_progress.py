"""What a worker says while it works (hpo.worker.progress): the live display (epoch N/M, a
batch bar, the latest and best value) on a recorded terminal console, the plain one-line-per-
trial mode of logs and ``--quiet``, the training loop's throttled batch callback, and a
pool's parent showing its children (a table from their events, their lines in a log)."""

from __future__ import annotations

import io
import json
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from hpo.cli.main import cli
from hpo.storage.urls import resolve_storage
from hpo.worker.progress import (
    EventLines,
    PoolProgress,
    WorkerProgress,
    describe_params,
    progress_console,
    read_event,
)
from tests.specs import describe, hpo_env, run_hpo, write_spec

ANSI = re.compile(r"\x1b")
EPOCHS = 3
N_TRIALS = 2


def terminal(width: int = 140) -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=width, highlight=False)


def log_file() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=80)


def output(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """The events of a real worker: 2 trials of 3 epochs on digits, two searched values."""
    from hpo.worker.loop import run_worker

    root = tmp_path_factory.mktemp("progress")
    journal = root / "progress.journal"
    spec = write_spec(root, "progress", n_trials=N_TRIALS, epochs=EPOCHS, search={
        "train.lr": "{low: 1.0e-3, high: 1.0e-1, log: true}", "model.width": "{choices: [8, 16]}"})
    created = CliRunner().invoke(cli, ["study", "create", str(spec), "--storage", str(journal)])
    assert created.exit_code == 0, created.output
    seen: list[tuple[str, dict]] = []
    report = run_worker("progress", resolve_storage(str(journal)), rank=0,
                        progress=lambda event, data: seen.append((event, data)))
    assert [o.state for o in report.outcomes] == ["complete"] * N_TRIALS
    return seen


def replay(events, show) -> None:
    for event, data in events:
        show(event, data)
    show.close()


@pytest.mark.slow
def test_a_real_run_reports_preparation_trials_batches_and_epochs(events):
    names = [event for event, _ in events]
    steps = [data["done"] for event, data in events if event == "preparing" and "done" in data]
    assert steps == ["opening study progress", "importing torch",
                     "loading digits (1,078 training images)", "warming up on cpu"]
    starts = [data for event, data in events if event == "trial_start"]
    assert [(s["trial"], s["epochs"], s["metric"], set(s["params"])) for s in starts] == [
        (i, EPOCHS, "val_accuracy", {"train.lr", "model.width"}) for i in range(N_TRIALS)]
    batches = [data for event, data in events if event == "batch"]
    # The first batch of every epoch is reported (throttled after it): 9 batches of 128.
    every_epoch = {(t, e) for t in range(N_TRIALS) for e in range(1, EPOCHS + 1)}
    assert {(b["trial"], b["epoch"]) for b in batches} == every_epoch
    assert all(b["batches"] == 1078 // 128 + 1 and 1 <= b["batch"] <= b["batches"] for b in batches)
    assert names.count("epoch") == N_TRIALS * EPOCHS and names[-1] == "trial_end"


@pytest.mark.slow
def test_the_live_display_shows_epoch_n_of_m_at_every_epoch(events):
    console = terminal()
    replay(events, WorkerProgress(console=console))
    text = output(console)
    for trial in range(N_TRIALS):
        shown = [int(e) for e in re.findall(rf"trial {trial} +epoch (\d)/{EPOCHS}", text)]
        assert set(shown) == set(range(1, EPOCHS + 1)), shown  # every epoch was displayed ...
        assert shown == sorted(shown)  # ... in order
        params = next(d["params"] for e, d in events if e == "trial_start" and d["trial"] == trial)
        assert f"trial {trial}: {describe_params(params)}\n" in text  # the line naming its values
        assert re.search(rf"trial {trial} complete after {EPOCHS} epochs: 0\.\d{{4}} \(", text)
    assert re.search(r"val_accuracy 0\.\d{4} +best 0\.\d{4}", text)
    assert ANSI.search(text)  # a live display: cursor and colour codes


@pytest.mark.slow
@pytest.mark.parametrize("console", [terminal, log_file], ids=["quiet-on-a-terminal", "a-log-file"])
def test_plain_mode_writes_one_line_per_trial_without_control_codes(events, console):
    recorded = console()
    replay(events, WorkerProgress(quiet=console is terminal, console=recorded, rank=7))
    lines = output(recorded).splitlines()
    assert not ANSI.search(output(recorded))
    starts = {d["trial"]: describe_params(d["params"]) for e, d in events if e == "trial_start"}
    trial_lines = [line for line in lines if line.startswith("[worker 7] trial ")]
    assert len(trial_lines) == N_TRIALS
    for number, line in enumerate(trial_lines):
        assert re.fullmatch(rf"\[worker 7\] trial {number} complete after {EPOCHS} epochs: 0\.\d{{4}} "
                            rf"\(\d+\.\d s\) \| {re.escape(starts[number])}", line), line
    assert lines[:4] == ["[worker 7] opening study progress… " + lines[0].rsplit("… ", 1)[1],
                         *lines[1:4]]
    assert "[worker 7] loading digits (1,078 training images)… " in output(recorded)
    assert "[worker 7] Device: cpu" in output(recorded)


def test_values_read_short_and_repeat_keys_as_lists():
    params = {"train.lr": 0.0031234, "model.filters[0]": 32, "model.filters[1]": 64,
              "train.optimizer": "adam", "train.weight_decay": 1e-05, "model.dropout": 0.25}
    assert describe_params(params) == ("train.lr=0.00312, model.filters=[32, 64], train.optimizer=adam, "
                                       "train.weight_decay=1e-5, model.dropout=0.25")


def test_the_training_loop_reports_batches_throttled(monkeypatch):
    from hpo.models import MLPConfig
    from hpo.training import DataConfig, TrainConfig, loop
    from hpo.training.metrics import EpochMetrics

    class Watching:
        def __init__(self):
            self.batches: list[tuple[int, int, int]] = []

        def report(self, metrics: EpochMetrics) -> bool:
            return False

        def batch(self, epoch: int, done: int, total: int) -> None:
            self.batches.append((epoch, done, total))

    data = DataConfig(name="digits", val_fraction=0.2, test_fraction=0.2)
    train = TrainConfig(epochs=2, batch_size=64, seed=0)
    config = MLPConfig(n_layers=1, width=8)
    every = Watching()
    monkeypatch.setattr(loop, "BATCH_REPORT_INTERVAL", 0.0)
    loop.train_model(data, config, train, reporter=every)
    total = every.batches[0][2]
    assert every.batches == [(e, b, total) for e in (1, 2) for b in range(1, total + 1)]
    throttled = Watching()
    monkeypatch.setattr(loop, "BATCH_REPORT_INTERVAL", 3600.0)
    loop.train_model(data, config, train, reporter=throttled)
    assert throttled.batches == [(1, 1, total), (2, 1, total)]  # the first of each epoch only


def child_lines(events, rank: int) -> list[str]:
    """What a pool child started with --progress-events writes for ``events``."""
    stream = io.StringIO()
    show = EventLines(stream, rank=rank)
    for event, data in events:
        show(event, data)
    return stream.getvalue().splitlines()


@pytest.mark.slow
def test_a_childs_events_are_compact_json_lines_read_back_alike(events):
    lines = child_lines(events, rank=3)
    decoded = [read_event(line) for line in lines]
    assert all(d is not None for d in decoded)
    assert [name for name, _ in decoded] == [e for e, _ in events if e != "swept"]
    assert all(len(line) < 400 and json.loads(line) for line in lines)
    assert read_event("[worker 3] Worker done: 2 trials") is None
    assert read_event('{"hpo_event": ') is None  # cut short: passed on as text


@pytest.mark.slow
def test_the_pool_table_shows_each_childs_trial_epoch_and_best(events):
    console = terminal(width=160)
    show = PoolProgress(console=console)
    a, b = child_lines(events, rank=5), child_lines(events, rank=6)
    for first, second in zip(a, b, strict=True):  # the two children interleaved
        show.line(0, 5, first)
        show.line(1, 6, second)
    show.ended(0, 5, "exit 0")
    show.line(1, 6, "[worker 6] Worker done: 2 trials (2 complete, 0 pruned, 0 failed)")
    show.close()
    text = output(console)
    for rank in (5, 6):
        rows = re.findall(rf"\[worker {rank}\] +trial (\d) +epoch (\d)/{EPOCHS}", text)
        assert {(int(t), int(e)) for t, e in rows} == {(t, e) for t in range(N_TRIALS) for e in range(1, EPOCHS + 1)}
        assert re.search(rf"\[worker {rank}\] trial 1 complete after {EPOCHS} epochs", text)
        assert re.search(rf"\[worker {rank}\] +trial 1 +epoch 3/3 .*val_accuracy 0\.\d{{4}} +best 0\.\d{{4}}", text)
    assert re.search(r"\[worker 5\] +exit 0", text)
    assert "[worker 6] Worker done: 2 trials" in text


@pytest.mark.slow
def test_the_pool_in_a_log_prints_each_childs_lines_with_its_rank(events):
    console = log_file()
    show = PoolProgress(console=console)
    for line in child_lines(events, rank=5):
        show.line(0, 5, line)
    show.line(0, 5, "Traceback (most recent call last):", stderr=True)
    show.close()
    lines = output(console).splitlines()
    assert not ANSI.search(output(console))
    assert [line.split(" complete")[0] for line in lines if " complete after " in line] == [
        "[worker 5] trial 0", "[worker 5] trial 1"]
    assert lines[-1] == "[worker 5] Traceback (most recent call last):"
    assert not any("epoch 1/" in line for line in lines)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_pool_in_a_log_shows_both_childrens_trials_with_their_rank(tmp_path):
    journal = tmp_path / "pool.journal"
    spec = write_spec(tmp_path, "pool-lines", n_trials=4, epochs=2)
    created = run_hpo("study", "create", str(spec), "--storage", str(journal), cwd=tmp_path)
    assert created.returncode == 0, describe([created])
    # --n-trials 2 each: neither child can take the whole budget, so both run trials.
    result = run_hpo("worker", "pool-lines", "--processes", "2", "--rank", "40", "--n-trials", "2",
                     env=hpo_env(storage=str(journal)), cwd=tmp_path)
    assert result.returncode == 0, describe([result])
    assert not ANSI.search(result.stdout + result.stderr), describe([result])
    for rank in (40, 41):
        trials = re.findall(rf"^\[worker {rank}\] trial \d complete after 2 epochs: 0\.\d{{4}} "
                            r"\(\d+\.\d s\) \| train\.lr=\S+$", result.stdout, re.M)
        assert len(trials) == 2, describe([result])
        assert f"[worker {rank}] loading digits (1,078 training images)… " in result.stdout
        assert f"[worker {rank}] Device: cpu" in result.stdout
        assert f"[worker {rank}] cpu: exit 0" in result.stdout or f"[worker {rank}] auto: exit 0" in result.stdout
    assert '"hpo_event"' not in result.stdout + result.stderr  # events shown, never passed on raw


def made_up_trial(number: int, values: list[float]) -> list[tuple[str, dict]]:
    """The events of one trial of len(values) epochs, as the worker emits them."""
    from hpo.training.metrics import EpochMetrics
    from hpo.worker.trial import Outcome, TrialOutcome

    events: list[tuple[str, dict]] = [("trial_start", {
        "trial": number, "params": {"train.lr": 0.01}, "epochs": len(values), "metric": "val_loss",
        "direction": "minimize"})]
    for epoch, value in enumerate(values, 1):
        events.append(("batch", {"trial": number, "epoch": epoch, "batch": 4, "batches": 8}))
        metrics = EpochMetrics(epoch=epoch, train_loss=1.0, val_loss=value, val_accuracy=0.5, seconds=0.1, lr=0.01)
        events.append(("epoch", {"trial": number, "metrics": metrics, "metric": "val_loss"}))
    outcome = TrialOutcome(number, Outcome.COMPLETE, min(values), len(values), 1.0)
    return [*events, ("trial_end", {"outcome": outcome})]


def test_the_best_so_far_follows_the_objectives_direction():
    console = terminal()
    replay(made_up_trial(0, [0.9, 0.5, 0.7]) + made_up_trial(1, [0.8, 0.6]), WorkerProgress(console=console))
    text = output(console)
    assert re.search(r"trial 0 +epoch 3/3 .*val_loss 0\.7000 +best 0\.5000", text)
    assert re.search(r"trial 1 +epoch 2/2 .*val_loss 0\.6000 +best 0\.5000", text)  # across trials


@pytest.mark.parametrize("widgets", [True, False], ids=["with-ipywidgets", "without"])
def test_a_notebook_is_live_with_ipywidgets_and_plain_without(monkeypatch, widgets):
    import importlib.util
    import warnings

    real = importlib.util.find_spec

    def find_spec(name, *args):  # ipywidgets there (any spec will do) or not
        if name == "ipywidgets":
            return real("json") if widgets else None
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    notebook = Console(file=io.StringIO(), force_jupyter=True, width=100)
    show = WorkerProgress(console=notebook)
    assert show.live is widgets
    if widgets:
        return  # rich draws into an ipywidgets Output there: not without a kernel
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rich's 'install "ipywidgets"' warning never comes
        replay(made_up_trial(3, [0.4, 0.3]), show)
    assert output(notebook) == "trial 3 complete after 2 epochs: 0.3000 (1.0 s) | train.lr=0.01\n"


def test_a_trial_that_never_started_names_no_values():
    """Sampling failed (an invalid combination): no trial_start, only its end."""
    from hpo.worker.trial import Outcome, TrialOutcome

    console = log_file()
    failed = TrialOutcome(4, Outcome.FAIL, None, 0, 0.1, "the sampled configuration is invalid: ...")
    replay([*made_up_trial(3, [0.4]), ("trial_end", {"outcome": failed})], WorkerProgress(console=console))
    assert output(console).splitlines() == [
        "trial 3 complete after 1 epochs: 0.4000 (1.0 s) | train.lr=0.01",
        "trial 4 failed after 0 epochs: the sampled configuration is invalid: ..."]


@pytest.mark.subprocess
def test_the_supervisor_reads_its_childrens_pipes_to_the_last_line(monkeypatch):
    """Real child processes (a few lines of Python standing in for hpo worker): their events
    and lines reach the parent's view through pool.spawn_child's pipes, stderr prefixed,
    every line read before the report even when the child exits straight after writing."""
    import sys

    from hpo.worker import pool

    script = (
        "import json, sys\n"
        "print(json.dumps({'hpo_event': 'chosen_device', 'description': 'cpu (1 thread)'}))\n"
        "print(json.dumps({'hpo_event': 'trial_end', 'trial': 0, 'line': 'trial 0 complete after 1 epochs: "
        "0.5000 (0.1 s)', 'value': 0.5}))\n"
        "print('a line of its own')\n"
        "print('Error: something on stderr', file=sys.stderr)\n"
    )
    console = log_file()
    slots = pool.plan_slots("s", rank=20, processes=2, device="cpu", environ={})
    code = pool.supervise(slots, {}, spawn=lambda command, env: pool.spawn_child([sys.executable, "-c", script], env),
                          poll_interval=0.01, show=PoolProgress(console=console))
    assert code == 0
    lines = output(console).splitlines()
    for rank in (20, 21):
        mine = [line for line in lines if line.startswith(f"[worker {rank}] ")]
        # Two streams, two reader threads: each stream's lines in order, the streams interleaved.
        assert [line for line in mine if "Error" not in line] == [
            f"[worker {rank}] Device: cpu (1 thread)",
            f"[worker {rank}] trial 0 complete after 1 epochs: 0.5000 (0.1 s)"]
        assert f"[worker {rank}] Error: something on stderr" in mine
    assert lines.count("a line of its own") == 2


def test_the_eta_is_the_pace_so_far_times_what_is_left():
    from hpo.worker.progress import WorkerRow

    start = {"trial": 0, "params": "", "epochs": 10, "metric": "val_accuracy", "direction": "maximize"}
    fresh = WorkerRow()
    fresh.apply("trial_start", start, now=0.0)
    assert fresh.eta(1.0) is None  # no batch yet: no pace
    fresh.apply("batch", {"trial": 0, "epoch": 1, "batch": 4, "batches": 8}, now=5.0)
    assert fresh.eta(5.0) == pytest.approx(5.0 * 9.5 / 0.5)  # half an epoch in 5 s, 9.5 to go
    fresh.apply("epoch", {"trial": 0, "epoch": 1, "value": 0.5, "metric": "val_accuracy"})
    assert fresh.eta(8.0) == pytest.approx(8.0 * 9)
    resumed = WorkerRow()  # from a checkpoint after epoch 5: its first batch is epoch 6's
    resumed.apply("trial_start", start, now=0.0)
    resumed.apply("batch", {"trial": 0, "epoch": 6, "batch": 4, "batches": 8}, now=5.0)
    assert resumed.eta(5.0) == pytest.approx(5.0 * 4.5 / 0.5)


class _GoneReader(io.StringIO):
    """A stream whose reader goes away after ``lines`` writes: then every write raises
    ``error`` (a broken pipe, a closed terminal, a closed file); writes are counted."""

    def __init__(self, lines: int, error: Exception):
        super().__init__()
        self.lines, self.error, self.writes = lines, error, 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes > self.lines:
            raise self.error
        return super().write(text)


# The events of a worker's start and two trials, as a worker sends them (plain form apart from
# trial_end's outcome, which the progress objects describe).
def _synthetic_events():
    from hpo.worker.trial import Outcome, TrialOutcome

    events: list[tuple[str, dict]] = [("preparing", {"step": "opening study s"}),
                                      ("preparing", {"step": "opening study s", "done": "opening study s",
                                                     "seconds": 0.1}),
                                      ("chosen_device", {"resolved": "cpu", "description": "cpu"})]
    for number in range(2):
        events.append(("trial_start", {"trial": number, "params": {"train.lr": 0.01}, "epochs": 1,
                                       "metric": "val_accuracy", "direction": "maximize"}))
        events.append(("batch", {"trial": number, "epoch": 1, "batch": 1, "batches": 2}))
        events.append(("trial_end", {"outcome": TrialOutcome(number=number, state=Outcome.COMPLETE, value=0.5,
                                                             epochs=1, seconds=0.1)}))
    return events


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), OSError(5, "Input/output error"),
                                   ValueError("I/O operation on closed file.")])
@pytest.mark.parametrize("live", [False, True])
def test_a_worker_whose_output_is_gone_goes_quiet_and_keeps_working(error, live):
    stream = _GoneReader(1, error)
    console = progress_console(file=stream, force_terminal=live, width=100, highlight=False)
    show = WorkerProgress(console=console)
    for event, data in _synthetic_events():
        show(event, data)  # nothing raises: the trials go on
    show.close()
    writes = stream.writes
    show("chosen_device", {"resolved": "cpu", "description": "cpu"})
    assert stream.writes == writes  # quiet for the rest of the run: no more attempts


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), ValueError("I/O operation on closed file.")])
def test_a_pool_whose_output_is_gone_goes_quiet(error):
    stream = _GoneReader(1, error)
    show = PoolProgress(console=progress_console(file=stream, force_terminal=False, width=100))
    lines = []
    for event, data in _synthetic_events():
        lines += child_lines([(event, data)], rank=3)
    for line in lines:
        show.line(0, 3, line)
    show.line(0, 3, "a line of its own")
    show.ended(0, 3, "exit 0")
    show.close()
    assert stream.writes == 2  # the line that went through, the one that failed; then none


def test_a_child_whose_stdout_is_closed_stops_its_event_lines():
    stream = io.StringIO()
    stream.close()  # sys.stdout closed: writes raise ValueError, not OSError
    show = EventLines(stream, rank=1)
    for event, data in _synthetic_events():
        show(event, data)
    assert show.broken


def test_a_broken_pipe_is_pointed_at_devnull_so_later_writes_succeed():
    import os

    read, write = os.pipe()
    os.close(read)  # `| head` has exited
    stream = os.fdopen(write, "w")
    try:
        show = WorkerProgress(console=progress_console(file=stream, force_terminal=False, width=100))
        for event, data in _synthetic_events():
            show(event, data)
        stream.write("the worker's last line\n")  # as the CLI's own summary would
        stream.flush()  # no BrokenPipeError: the descriptor now goes to os.devnull
    finally:
        stream.close()
