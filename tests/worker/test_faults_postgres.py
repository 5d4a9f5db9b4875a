"""Faults against a real PostgreSQL server that the tests start, stop and restart.

- a worker on another machine dies: its trial's heartbeat goes stale, and a live worker's
  periodic sweep fails and retries it while that worker is busy training;
- SIGTERM: the trial is checkpointed and handed back, and another worker resumes it;
- the server restarts mid-study (and is down for seconds): workers wait, reconnect and
  finish exactly the budget;
- 16 worker processes on one study: exactly the budget, no duplicates, no lost trials, and
  at most 2 connections per worker.
"""

from __future__ import annotations

import collections
import re
import signal
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.study.attrs import OVER_BUDGET as OVER_BUDGET_ATTR
from tests.specs import describe, hpo_env, run_hpo, start_hpo, wait_all

pytestmark = [pytest.mark.subprocess]

SPEC = """\
name: {name}
objective: {{metric: val_accuracy, direction: maximize}}
budget: {{n_trials: {n_trials}, max_retries: 2, {budget}}}
sampler: {{name: random, seed: 0}}
pruner: {{name: {pruner}}}
data: {{name: digits, val_fraction: 0.2, test_fraction: 0.2, split_seed: 0}}
model: {{name: mlp, n_layers: 1, width: 16, activation: relu}}
train: {{epochs: {epochs}, batch_size: {batch_size}, optimizer: sgd, lr: 0.01, momentum: 0.9, seed: 0}}
search:
  train.lr: {{low: 1.0e-3, high: 1.0e-1, log: true}}
"""


def create(root: Path, url: str, name: str, *, n_trials: int, epochs: int, batch_size: int = 16,
           pruner: str = "none", budget: str = "heartbeat_interval: 1, heartbeat_grace_period: 3") -> dict[str, str]:
    path = root / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, n_trials=n_trials, epochs=epochs, batch_size=batch_size, pruner=pruner,
                                budget=budget))
    env = hpo_env(storage=url)
    created = run_hpo("study", "create", str(path), "--artifacts", str(root / "artifacts"), env=env, cwd=root)
    assert created.returncode == 0, describe([created])
    return env


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url))


def wait_until(condition, what: str, procs=(), timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if any(p.poll() is not None for p in procs):
            raise AssertionError(f"a worker exited before {what}\n" + describe(wait_all(list(procs))))
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def training(study: optuna.Study, number: int, min_epoch: int):
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    ok = trial is not None and trial.state == TrialState.RUNNING and len(trial.intermediate_values) >= min_epoch
    return trial if ok else None


@pytest.mark.slow
def test_a_dead_remote_workers_trial_is_swept_by_heartbeat_while_the_others_train(tmp_path, postgres_server,
                                                                                  postgres_url):
    # Long enough (7 s here) that trial 0 still trains when the sweep (every 1.5 s) comes round.
    epochs = 300
    env = create(tmp_path, postgres_url, "remote", n_trials=2, epochs=epochs)
    study = load(postgres_url, "remote")
    worker = start_hpo("worker", "remote", "--quiet", env=env, cwd=tmp_path)
    wait_until(lambda: training(study, 0, 1), "trial 0 to train", [worker])

    # A worker on another machine took a trial, beat once an hour ago, and died.
    ghost = study.ask()
    study._storage.set_trial_param(ghost._trial_id, "train.lr", 0.05,
                                   optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True))
    study._storage.set_trial_user_attr(ghost._trial_id, "worker", {"host": "gpu-node-7", "pid": 4242, "rank": 9})
    study._storage.record_heartbeat(ghost._trial_id)
    with postgres_server.connect(postgres_url.rsplit("/", 1)[1]) as conn, conn.cursor() as cur:
        cur.execute("UPDATE trial_heartbeats SET heartbeat = heartbeat - interval '1 hour' WHERE trial_id = %s",
                    (ghost._trial_id,))

    def swept():  # failed, and then (a moment later) its retry enqueued
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        retried = any(t.user_attrs.get("retry_of") == ghost.number for t in trials.values())
        return trials if trials[ghost.number].state == TrialState.FAIL and retried else None

    trials = wait_until(swept, "the ghost trial to be swept", [worker], timeout=30)
    # Swept by the periodic sweep while the worker was still inside trial 0.
    assert trials[0].state == TrialState.RUNNING
    assert trials[ghost.number].user_attrs["fail_reason"] == (
        "worker process 4242 on gpu-node-7 stopped sending heartbeats for over 3 s")
    (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == ghost.number]
    assert retry.state == TrialState.WAITING and retry.system_attrs["fixed_params"] == {"train.lr": 0.05}

    # Preemption on a database: hand trial 0 back, and let another worker finish the study.
    worker.send_signal(signal.SIGTERM)
    (stopped,) = wait_all([worker])
    assert stopped.returncode == 0 and "stopped by SIGTERM" in stopped.stdout, describe([stopped])
    finisher = run_hpo("worker", "remote", "--quiet", env=env, cwd=tmp_path)
    assert finisher.returncode == 0, describe([finisher])
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 2, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    resumed = next(t for t in finished if t.user_attrs.get("retry_of") == 0)
    assert resumed.user_attrs["resumed_from"]["epoch"] >= 1
    assert resumed.user_attrs["epochs_trained"] == epochs
    assert sorted(resumed.intermediate_values) == list(range(1, epochs + 1))
    assert next(t for t in finished if t.user_attrs.get("retry_of") == ghost.number).params == {"train.lr": 0.05}


@pytest.mark.slow
def test_workers_wait_through_a_server_restart_and_finish_exactly_the_budget(tmp_path, postgres_server, postgres_url):
    n_trials = 8
    # Trials of a few seconds (300 short epochs), so that the study is still running when
    # the server comes back, about 8 s after the first trial finished.
    env = create(tmp_path, postgres_url, "restart", n_trials=n_trials, epochs=300, batch_size=32)
    study = load(postgres_url, "restart")
    workers = [start_hpo("worker", "restart", "--quiet", "--reconnect-timeout", "120", env=env, cwd=tmp_path)
               for _ in range(2)]
    try:
        wait_until(lambda: sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) >= 1
                   and any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)),
                   "a finished trial and a running one", workers)
        study._storage._backend.engine.dispose()
        postgres_server.restart()  # a quick restart ...
        time.sleep(2)
        postgres_server.stop()  # ... and an outage of a few seconds
        time.sleep(4)
        postgres_server.start()
    finally:
        results = wait_all(workers)
    assert all(r.returncode == 0 for r in results), describe(results)
    stderr = "".join(r.stderr for r in results)
    assert "unreachable" in stderr and "reachable again after" in stderr, describe(results)

    study = load(postgres_url, "restart")
    trials = study.get_trials(deepcopy=False)
    states = collections.Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] == n_trials, (states, describe(results))
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0
    # Nothing failed except trials handed back over budget, unrun; none was duplicated.
    assert all(t.user_attrs.get(OVER_BUDGET_ATTR) for t in trials if t.state == TrialState.FAIL)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    reported = sum(len(re.findall(r"^trial \d+ complete", r.stdout, re.M)) for r in results)
    assert reported == n_trials, describe(results)


@pytest.mark.slow
def test_16_workers_share_one_study_exactly_within_2_connections_each(tmp_path, postgres_server):
    n_workers, n_trials = 16, 32
    if not postgres_server.is_running:
        postgres_server.start()
    dbname = f"t_sixteen_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(dbname)
    # The default heartbeat settings: 16 processes starting torch on 2 cores can hold a
    # heartbeat back for seconds, which a 3 s grace period would take for a dead worker.
    env = create(tmp_path, url, "sixteen", n_trials=n_trials, epochs=2, batch_size=256, pruner="median",
                 budget="heartbeat_interval: 10, heartbeat_grace_period: 60")

    peak = {"connections": 0}
    done = threading.Event()

    def watch() -> None:  # every connection to the study's database, ours excluded
        try:
            conn = postgres_server.connect(dbname)
            conn.autocommit = True
            with conn.cursor() as cur:
                while not done.wait(0.1):
                    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                                (dbname,))
                    peak["connections"] = max(peak["connections"], cur.fetchone()[0])
            conn.close()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            peak["error"] = repr(exc)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        pool = start_hpo("worker", "sixteen", "--processes", str(n_workers), env=env, cwd=tmp_path)
        (result,) = wait_all([pool])
    finally:
        done.set()
        watcher.join()
    trials = load(url, "sixteen").get_trials(deepcopy=False)
    reasons = collections.Counter(t.user_attrs.get("fail_reason") for t in trials if t.state == TrialState.FAIL)
    assert result.returncode == 0, (reasons, describe([result]))
    # "auto": the default --device each child was given (and resolved itself).
    assert len(re.findall(r"^\[worker \d+\] auto: exit 0$", result.stdout, re.M)) == n_workers, describe([result])

    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials
    assert all(t.state == TrialState.FAIL and t.user_attrs.get(OVER_BUDGET_ATTR)
               for t in trials if t not in finished)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({t.params["train.lr"] for t in finished}) == n_trials  # per-worker seeds: no duplicates
    assert len({t.user_attrs["worker"]["pid"] for t in finished}) > 1
    assert 0 < peak["connections"] <= 2 * n_workers, peak


def test_out_of_memory_divergence_and_errors_are_recorded_and_too_many_failures_stop_the_worker(tmp_path, postgres_url):
    """Faults 4-7 on PostgreSQL, in-process, with a stand-in for training that fails in turn."""
    import torch
    from click.testing import CliRunner

    from hpo.cli.main import cli
    from hpo.errors import DivergedError
    from hpo.storage.urls import resolve_storage
    from hpo.worker.loop import run_worker

    create(tmp_path, postgres_url, "faults", n_trials=10, epochs=3, budget="max_failed_trials: 2")
    calls = {"n": 0}

    def failing(data, model, train, *, reporter, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if calls["n"] == 2:
            raise DivergedError("loss became nan at epoch 1, batch 3")
        raise RuntimeError("a bug in a custom model")

    report = run_worker("faults", resolve_storage(postgres_url), trainer=failing, reconnect_timeout=10)
    assert report.exit_code == 1
    assert report.stop_reason == ("2 trials failed, reaching budget.max_failed_trials = 2; "
                                  "see 'hpo study show' for the reasons")
    assert [o.state for o in report.outcomes] == ["steered", "steered", "fail", "fail"]
    trials = load(postgres_url, "faults").get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert trials[0].user_attrs["fail_reason"] == "out of memory at batch_size=16"
    assert trials[0].intermediate_values == {1: float("-inf")}  # the sampler steers away
    assert trials[1].user_attrs["fail_reason"] == "loss became nan at epoch 1, batch 3"
    assert trials[2].user_attrs["fail_reason"] == "RuntimeError: a bug in a custom model"
    shown = CliRunner().invoke(cli, ["study", "show", "faults", "--storage", postgres_url, "--format", "json"])
    assert shown.exit_code == 0, shown.output
    import json

    failures = {f["reason"]: f["count"] for f in json.loads(shown.stdout)["failures"]}
    assert failures == {"RuntimeError: a bug in a custom model": 2, "out of memory at batch_size=16": 1,
                        "loss became nan at epoch 1, batch 3": 1}
