"""Ctrl-C (SIGINT) stops a worker as SIGTERM does: the first one checkpoints and hands the
trial back (exit 0, with a message), a second one aborts at once (exit 130, the trial handed
back from its last checkpoint). Outside a trial the first one leaves at once.

The first test is a real ``hpo worker`` subprocess; the others run the CLI in-process and send
the signal to this process from inside the worker, at the moment each one is about.
"""

from __future__ import annotations

import os
import re
import signal
import time

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from hpo.cli.main import cli
from hpo.storage.urls import resolve_storage
from hpo.study.studies import load_study
from tests.specs import describe, run_hpo, start_hpo, wait_all, worker_lines, write_spec
from tests.worker.test_faults import EPOCHS, create, trials, wait_for_checkpoint


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_first_ctrl_c_checkpoints_hands_the_trial_back_and_exits_0(tmp_path):
    env = create(tmp_path, "interrupted")
    worker = start_hpo("worker", "interrupted", "--quiet", env=env, cwd=tmp_path)
    caught = wait_for_checkpoint(worker, tmp_path, "interrupted", min_epoch=2)
    sent = time.monotonic()
    worker.send_signal(signal.SIGINT)
    (stopped,) = wait_all([worker])
    took = time.monotonic() - sent
    assert stopped.returncode == 0, describe([stopped])
    assert took < 10, f"the worker took {took:.1f} s to stop"
    assert "Traceback" not in stopped.stderr, describe([stopped])
    assert ("SIGINT received: stopping after the current batch (a trial in progress is checkpointed "
            "and handed back); a second Ctrl-C aborts at once") in stopped.stderr
    first, waiting = trials(tmp_path, "interrupted")
    reason = first.user_attrs["fail_reason"]
    assert re.fullmatch(r"stopped by SIGINT at (epoch \d+, batch \d+|the end of epoch \d+) \(checkpoint saved\)",
                        reason), reason
    assert f"trial 0 {reason}; handed back to be resumed by the next worker" in stopped.stdout
    assert stopped.stdout.rstrip().endswith("(0 complete, 0 pruned, 0 failed, 1 handed back); stopped by SIGINT")
    assert first.state == TrialState.FAIL and first.user_attrs["retried"] is True
    assert waiting.state == TrialState.WAITING and waiting.user_attrs["resume_from"] == first.user_attrs["checkpoint"]

    resumed = run_hpo("worker", "interrupted", "--quiet", env=env, cwd=tmp_path)
    assert resumed.returncode == 0, describe([resumed])
    _, retry = trials(tmp_path, "interrupted")
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["retry_of"] == 0
    checkpoint_epoch = int(re.match(r"checkpoint-0-e(\d+)", caught.user_attrs["checkpoint"]).group(1))
    assert retry.user_attrs["resumed_from"]["epoch"] >= checkpoint_epoch
    assert retry.user_attrs["epochs_trained"] == EPOCHS


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A one-trial study on the embedded storage, in the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    created = CliRunner().invoke(cli, ["study", "create", str(write_spec(tmp_path, "tiny", n_trials=2, epochs=3))])
    assert created.exit_code == 0, created.output
    return lambda: load_study("tiny", resolve_storage(None)).study.get_trials(deepcopy=False)


def interrupt_this_process() -> None:
    """SIGINT to ourselves, and time for its handler to run (it runs between bytecodes)."""
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(100):
        time.sleep(0.001)


def test_ctrl_c_before_the_first_trial_leaves_at_once_with_a_message(tiny, monkeypatch):
    def warm_up_interrupted(*args):  # (spec, device, emit)
        interrupt_this_process()
        raise AssertionError("the warm-up went on after the signal")

    monkeypatch.setattr("hpo.worker.loop._warm_up", warm_up_interrupted)
    result = CliRunner().invoke(cli, ["worker", "tiny", "--quiet"])
    assert result.exit_code == 0, result.output
    device_line, *lines = worker_lines(result.stdout)
    assert device_line.startswith("Device: cpu (")  # chosen before the warm-up began
    assert lines == [
        "Worker done: 0 trials (0 complete, 0 pruned, 0 failed); stopped by SIGINT before its first trial"]
    assert tiny() == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_ctrl_c_between_trials_stops_before_the_next_one(tiny):
    from hpo.worker.loop import run_worker

    def progress(event, data):
        if event == "trial_end":
            interrupt_this_process()

    report = run_worker("tiny", resolve_storage(None), progress=progress)
    assert report.exit_code == 0 and report.stop_reason == "stopped by SIGINT"
    assert [t.state for t in tiny()] == [TrialState.COMPLETE]


def test_a_second_ctrl_c_aborts_at_once_exits_130_and_hands_the_trial_back(tiny, monkeypatch):
    def trainer(*args, stop_requested, **kwargs):
        interrupt_this_process()
        assert stop_requested()  # the first asks for a stop ...
        interrupt_this_process()  # ... the second does not wait for the batch to end
        raise AssertionError("training went on after the second signal")

    monkeypatch.setattr("hpo.training.train_model", trainer)
    result = CliRunner().invoke(cli, ["worker", "tiny", "--quiet"])
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines()[-1] == (
        "Error: aborted by a second SIGINT: trial 0 handed back, to be resumed from the start by the next worker")
    assert "Traceback" not in result.output
    first, retry = tiny()
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "aborted by a second SIGINT"
    assert first.user_attrs["retried"] is True
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_two_signals_between_ask_and_the_trials_start_hand_the_trial_back(tiny, monkeypatch):
    # The window in which the trial exists (RUNNING) but no TrialRun holds it yet.
    import hpo.worker.loop as loop

    def over_budget_interrupted(*args, **kwargs):
        interrupt_this_process()
        interrupt_this_process()
        raise AssertionError("the worker went on after the second signal")

    monkeypatch.setattr(loop, "is_over_budget", over_budget_interrupted)
    result = CliRunner().invoke(cli, ["worker", "tiny", "--quiet"])
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines()[-1] == (
        "Error: aborted by a second SIGINT: trial 0 failed before its parameters were stored "
        "(the sampler picks the next trial's)")
    # Not retried: a retry queued without parameters fails under the grid sampler, and any
    # other sampler chooses afresh (tests/worker/test_recovery.py). Its failure is no failure
    # of the spec, and its budget slot is free again.
    (first,) = tiny()
    assert first.state == TrialState.FAIL and first.user_attrs["retried"] is True


def test_a_second_signal_during_the_hand_back_waits_for_it_then_aborts(tiny, monkeypatch):
    """Cut short between failing the trial and enqueueing its retry, the trial would be lost."""
    enqueue = optuna.Study.enqueue_trial

    def enqueue_after_a_second_signal(self, *args, **kwargs):
        interrupt_this_process()  # arrives after the trial is failed, before its retry exists
        return enqueue(self, *args, **kwargs)

    def trainer(*args, stop_requested, **kwargs):
        from hpo.errors import Preempted

        interrupt_this_process()
        assert stop_requested()
        raise Preempted(1, 0, checkpointed=False)  # as training does at the next batch

    monkeypatch.setattr("hpo.training.train_model", trainer)
    monkeypatch.setattr(optuna.Study, "enqueue_trial", enqueue_after_a_second_signal)
    result = CliRunner().invoke(cli, ["worker", "tiny", "--quiet"])
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines()[-1] == "Error: aborted by a second SIGINT"
    first, retry = tiny()
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == (
        "stopped by SIGINT at the start (nothing to save yet)")
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == 0


class AbortsOnTheSecondSignal:
    """A pool child (Popen stand-in) that, like ``hpo worker``, keeps going on the first stop
    signal (it is finishing its batch) and exits 128 + N on the second; ``stubborn`` never
    exits. ``on_poll`` runs at each of its polls (a user pressing Ctrl-C)."""

    def __init__(self, *, stubborn=False, on_poll=None):
        self.stubborn, self.on_poll = stubborn, on_poll
        self.returncode = None
        self.signals: list[int] = []

    def poll(self):
        if self.on_poll is not None:
            self.on_poll(self)
        return self.returncode

    def send_signal(self, signum):
        self.signals.append(signum)
        if len(self.signals) == 2 and not self.stubborn:
            self.returncode = 128 + signum

    def kill(self):
        if self.returncode is None:
            self.returncode = -signal.SIGKILL


def test_a_pool_forwards_the_second_ctrl_c_and_kills_what_does_not_abort(monkeypatch, capsys):
    from hpo.worker import pool

    presses = []

    def press_ctrl_c_twice(child):  # once the previous press has reached the children
        if len(presses) < 2 and len(child.signals) == len(presses):
            presses.append(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(pool, "ABORT_GRACE", 0.3)
    stubborn, aborts = AbortsOnTheSecondSignal(stubborn=True), AbortsOnTheSecondSignal(on_poll=press_ctrl_c_twice)
    children = iter([stubborn, aborts])
    started = time.monotonic()
    code = pool.supervise(pool.plan_slots("s", rank=0, processes=2, device="cpu", environ={}), {}, stop_grace=60,
                          spawn=lambda command, env: next(children), poll_interval=0.01)
    assert time.monotonic() - started < 5  # not the 60 s grace of a first signal
    assert aborts.signals == [signal.SIGINT, signal.SIGINT] and stubborn.signals == [signal.SIGINT, signal.SIGINT]
    out, err = capsys.readouterr()
    assert out.splitlines() == ["[worker 0] cpu: killed by SIGKILL", "[worker 1] cpu: exit 130"]
    assert "Second interrupt: the workers abort (handing their trials back); killed in 0.3 s" in err
    assert "Workers still running 0.3 s after the second signal: killing them" in err
    assert code == 128 + signal.SIGKILL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
