"""``hpo worker --gpus/--per-gpu/--processes``: planning (which child gets which GPU and
rank), supervision (restart policy, signals, the per-child report) and the usage errors,
all on the CPU: the device count and the child launcher are stubbed, and one real run
SIGKILLs a child of ``--processes 2`` mid-trial."""

from __future__ import annotations

import collections
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.errors import UsageError
from hpo.worker import pool
from tests.specs import describe, hpo_env, run_hpo, start_hpo, wait_all, write_spec


def gpus(n: int):
    return lambda: n


# ----------------------------------------------------------------------------- --gpus


@pytest.mark.parametrize(("text", "count", "expected"), [
    ("0,1,2,3", 4, [0, 1, 2, 3]),
    ("2", 4, [2]),
    ("3, 1", 4, [3, 1]),
    ("all", 2, [0, 1]),
    ("ALL", 1, [0]),
])
def test_parse_gpus(text, count, expected):
    assert pool.parse_gpus(text, gpus(count)) == expected


@pytest.mark.parametrize(("text", "count", "message"), [
    ("all", 0, "--gpus all: no CUDA GPU is visible on this machine"),
    ("0", 0, "--gpus 0: no CUDA GPU is visible on this machine"),
    ("0,4", 4, "--gpus 0,4: no GPU 4 on this machine; 4 GPU(s) are visible (ids 0-3)"),
    ("0,0", 4, "--gpus 0,0: GPU 0 is listed twice (use --per-gpu K for K processes on each GPU)"),
    ("cuda:0", 4, "--gpus cuda:0: expected 'all' or GPU ids separated by commas, like 0,1,2,3"),
    ("0,,1", 4, "--gpus 0,,1: expected 'all' or GPU ids separated by commas, like 0,1,2,3"),
    ("-1", 4, "--gpus -1: expected 'all' or GPU ids separated by commas, like 0,1,2,3"),
])
def test_parse_gpus_errors(text, count, message):
    with pytest.raises(UsageError) as caught:
        pool.parse_gpus(text, gpus(count))
    assert str(caught.value) == message


def test_syntax_is_checked_before_torch_is_asked():
    def no_torch() -> int:
        raise AssertionError("device count looked up for a malformed --gpus")

    with pytest.raises(UsageError):
        pool.parse_gpus("x", no_torch)


# ----------------------------------------------------------------------------- planning


def test_plan_pins_each_child_to_its_gpu_and_numbers_ranks_from_rank(monkeypatch):
    monkeypatch.setattr("hpo.worker.threads.available_cores", lambda: 8)
    monkeypatch.delenv("HPO_THREADS", raising=False)
    slots = pool.plan_slots("s", rank=10, gpus=[0, 2], per_gpu=2, n_trials=5, timeout=None,
                            environ={})
    assert [(s.rank, s.label, dict(s.env)) for s in slots] == [
        (10, "gpu 0", {"CUDA_VISIBLE_DEVICES": "0"}),
        (11, "gpu 0", {"CUDA_VISIBLE_DEVICES": "0"}),
        (12, "gpu 2", {"CUDA_VISIBLE_DEVICES": "2"}),
        (13, "gpu 2", {"CUDA_VISIBLE_DEVICES": "2"}),
    ]
    command = slots[2].command()
    # -P and the entry below: the working directory is searched last, never first
    # (tests/worker/test_pool_child_imports.py runs a pool among shadowing files).
    assert command[:5] == [sys.executable, "-P", "-c", pool.CHILD_ENTRY, "worker"]
    assert command[5:] == ["s", "--progress-events", "--threads", "2",  # 8 cores, 4 children
                           "--n-trials", "5", "--device", "cuda:0", "--rank", "12"]
    assert slots[2].command(21)[-2:] == ["--rank", "21"]


def test_plan_maps_gpu_ids_through_the_parents_visible_devices():
    # The parent sees physical GPUs 3 and 5 as 0 and 1: the children must get 3 and 5.
    slots = pool.plan_slots("s", rank=0, gpus=[1, 0], environ={"CUDA_VISIBLE_DEVICES": "3,5"})
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["5", "3"]
    assert [s.label for s in slots] == ["gpu 1", "gpu 0"]


def test_plan_on_the_cpu(monkeypatch):
    monkeypatch.setattr("hpo.worker.threads.available_cores", lambda: 8)
    monkeypatch.delenv("HPO_THREADS", raising=False)
    slots = pool.plan_slots("s", rank=4, processes=3, timeout=2.5, device="cpu", environ={})
    assert [(s.rank, s.label, dict(s.env), s.device) for s in slots] == [
        (4, "cpu", {}, "cpu"), (5, "cpu", {}, "cpu"), (6, "cpu", {}, "cpu")]
    assert slots[0].command()[5:] == ["s", "--progress-events", "--threads", "2",  # 8 cores, 3 children
                                      "--timeout", "2.5", "--device", "cpu", "--rank", "4"]


# ----------------------------------------------------------------------------- supervising


class FakeChild:
    """A Popen stand-in that exits with the next scripted code after ``polls`` polls
    (None: runs until signalled; ``stubborn``: ignores signals, dies only when killed)."""

    def __init__(self, code, polls=2, stubborn=False):
        self.script, self.polls, self.stubborn = code, polls, stubborn
        self.returncode = None
        self.signals: list[int] = []

    def poll(self):
        if self.returncode is None and self.script is not None:
            self.polls -= 1
            if self.polls <= 0:
                self.returncode = self.script
        return self.returncode

    def send_signal(self, signum):
        self.signals.append(signum)
        if not self.stubborn and self.returncode is None:
            self.returncode = 130 if signum == signal.SIGINT else -signum

    def kill(self):
        if self.returncode is None:
            self.returncode = -signal.SIGKILL


class FakeLauncher:
    def __init__(self, scripts):
        self.scripts = {label: list(codes) for label, codes in scripts.items()}
        self.started: list[tuple[list[str], dict[str, str], FakeChild]] = []

    def __call__(self, command, env):
        rank = int(command[command.index("--rank") + 1])
        slot = self.slot_of(rank)
        code = self.scripts[slot].pop(0)
        child = code if isinstance(code, FakeChild) else FakeChild(code)
        self.started.append((command, env, child))
        return child

    slot_of = staticmethod(lambda rank: rank)


def test_restart_policy_and_report(capsys):
    slots = pool.plan_slots("s", rank=0, processes=4, device="cpu", environ={})
    launcher = FakeLauncher({
        0: [-signal.SIGKILL, 0],  # killed (OOM killer): restarted, then spends the budget
        1: [1],  # max_failed_trials: stays down
        2: [3, -signal.SIGSEGV, 3],  # crashes every time: gives up after 2 restarts
        3: [0],  # budget spent
    })
    launcher.slot_of = lambda rank: rank % 4
    code = pool.supervise(slots, {"HPO_STORAGE": "postgresql://u:secret@h/db"}, max_restarts=2,
                          backoff=0, spawn=launcher, poll_interval=0.001)
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "[worker 0] cpu: exit 0 after 1 restart (as rank 4)",
        "[worker 1] cpu: exit 1",
        "[worker 2] cpu: exit 3 after 2 restarts (as rank 6, 10); not restarted: --max-restarts 2 used up",
        "[worker 3] cpu: exit 0",
    ]
    assert "[worker 0] cpu: killed by SIGKILL; restarting in 0 s as rank 4 (restart 1 of 2)" in err
    assert "[worker 2] cpu: killed by SIGSEGV; restarting in 0 s as rank 10 (restart 2 of 2)" in err
    assert code == 3
    assert len(launcher.started) == 7
    for command, env, _ in launcher.started:
        assert env["HPO_STORAGE"] == "postgresql://u:secret@h/db"
        assert not any("secret" in part for part in command)


def test_gpu_children_get_their_device_through_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # empty: the parent sees all
    monkeypatch.setenv("HPO_WORKER_RANK", "77")
    slots = pool.plan_slots("s", rank=0, gpus=[0, 1], per_gpu=1)
    launcher = FakeLauncher({0: [0], 1: [-signal.SIGKILL, 0]})
    launcher.slot_of = lambda rank: rank % 2
    code = pool.supervise(slots, {}, backoff=0, spawn=launcher, poll_interval=0.001)
    assert code == 0
    seen = [(env["CUDA_VISIBLE_DEVICES"], cmd[cmd.index("--device") + 1], cmd[-1]) for cmd, env, _ in launcher.started]
    assert sorted(seen) == [("0", "cuda:0", "0"), ("1", "cuda:0", "1"), ("1", "cuda:0", "3")]
    assert all("HPO_WORKER_RANK" not in env for _, env, _ in launcher.started)
    assert capsys.readouterr().out.splitlines() == [
        "[worker 0] gpu 0: exit 0", "[worker 1] gpu 1: exit 0 after 1 restart (as rank 3)"]


def test_signals_are_forwarded_then_stragglers_killed_and_nothing_restarted(capsys):
    slots = pool.plan_slots("s", rank=0, processes=3, device="cpu", environ={})
    polite, stubborn, crashed = FakeChild(None), FakeChild(None, stubborn=True), FakeChild(-9, polls=1)
    launcher = FakeLauncher({0: [polite], 1: [stubborn], 2: [crashed]})

    def sigterm_soon(command, env):
        child = launcher(command, env)
        if len(launcher.started) == 3:  # all started: the pool is told to stop
            os.kill(os.getpid(), signal.SIGTERM)
        return child

    previous = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    code = pool.supervise(slots, {}, backoff=0.5, stop_grace=0.3, spawn=sigterm_soon, poll_interval=0.01)
    assert time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert polite.signals == [signal.SIGTERM] and stubborn.signals == [signal.SIGTERM]
    assert len(launcher.started) == 3  # the crashed one was not restarted during the stop
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "[worker 0] cpu: killed by SIGTERM",
        "[worker 1] cpu: killed by SIGKILL",
        "[worker 2] cpu: killed by SIGKILL",
    ]
    assert "killing them" in err
    assert code == 128 + signal.SIGTERM  # the highest code among the children


def test_pool_exit_code():
    assert pool.pool_exit_code([0, 0]) == 0
    assert pool.pool_exit_code([0, 1]) == 1
    assert pool.pool_exit_code([1, -9, 0]) == 137
    assert pool.pool_exit_code([130, 0]) == 130


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("HPO_STORAGE", "HPO_WORKER_RANK", "HPO_DEBUG", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)

    def run(*args: str, gpu_count: int = 0):
        monkeypatch.setattr(pool, "cuda_device_count", lambda: gpu_count)
        return CliRunner().invoke(cli, ["worker", "study", *args])

    return run


@pytest.mark.parametrize(("args", "count", "message"), [
    (["--gpus", "all"], 0, "--gpus all: no CUDA GPU is visible on this machine"),
    (["--gpus", "2"], 2, "--gpus 2: no GPU 2 on this machine; 2 GPU(s) are visible (ids 0-1)"),
    (["--gpus", "0", "--device", "cuda:1"], 2,
     "--gpus and --device cannot be combined: --gpus runs each process on its own GPU (as cuda:0 inside it)"),
    (["--gpus", "0", "--device", "cpu"], 2,
     "--gpus and --device cannot be combined: --gpus runs each process on its own GPU (as cuda:0 inside it)"),
    (["--gpus", "0,1", "--processes", "2"], 2,
     "--gpus and --processes cannot be combined: use --per-gpu K for K processes on each GPU"),
    (["--per-gpu", "2"], 2, "--per-gpu needs --gpus (on the CPU, use --processes K)"),
])
def test_usage_errors(cli_run, args, count, message):
    result = cli_run(*args, gpu_count=count)
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {message}\n"  # before the storage is even looked at
    assert not Path("hpo-studies.journal").exists()


def test_gpus_reach_the_pool(cli_run, monkeypatch):
    calls = []
    monkeypatch.setattr(pool, "run_pool", lambda *a, **kw: calls.append((a, kw)) or 0)
    result = cli_run("--gpus", "all", "--per-gpu", "2", "--rank", "5", "--max-restarts", "1",
                     "--storage", "x.journal", gpu_count=3)
    assert result.exit_code == 0, result.output
    (args, kw), = calls
    assert args[0] == "study"
    assert kw["gpus"] == [0, 1, 2] and kw["per_gpu"] == 2 and kw["rank"] == 5
    assert kw["max_restarts"] == 1 and kw["device"] == "auto"  # the default; each child gets cuda:0


def test_gpus_through_the_cli_with_a_stubbed_launcher(cli_run, monkeypatch, tmp_path):
    # A study with trials to run: the parent checks the budget before starting any child.
    created = CliRunner().invoke(cli, ["study", "create", str(write_spec(tmp_path, "study")),
                                       "--storage", "x.journal"])
    assert created.exit_code == 0, created.output
    launcher = FakeLauncher({0: [0], 1: [0], 2: [0], 3: [0]})
    monkeypatch.setattr(pool, "spawn_child", launcher)
    result = cli_run("--gpus", "1,3", "--per-gpu", "2", "--rank", "0", "--storage", "x.journal",
                     gpu_count=4)
    assert result.exit_code == 0, result.output
    pinned = [(cmd[-1], env["CUDA_VISIBLE_DEVICES"]) for cmd, env, _ in launcher.started]
    assert pinned == [("0", "1"), ("1", "1"), ("2", "3"), ("3", "3")]
    assert all(env["HPO_STORAGE"].endswith("x.journal") for _, env, _ in launcher.started)
    assert all("x.journal" not in " ".join(cmd) for cmd, _, _ in launcher.started)
    lines = [line for line in result.output.splitlines() if line.startswith("[worker")]
    assert lines == ["[worker 0] gpu 1: exit 0", "[worker 1] gpu 1: exit 0",
                     "[worker 2] gpu 3: exit 0", "[worker 3] gpu 3: exit 0"]


# ----------------------------------------------------------------------------- a real pool


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.add(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_child_killed_mid_trial_is_restarted_and_the_study_finishes(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from hpo.storage.urls import open_storage, resolve_storage

    n_trials, per_child = 12, 6
    journal = tmp_path / "pool.journal"
    spec = write_spec(tmp_path, "pool-kill", n_trials=n_trials, epochs=2)
    created = run_hpo("study", "create", str(spec), "--storage", str(journal), cwd=tmp_path)
    assert created.returncode == 0, describe([created])

    # Each child stops after 6 trials: the survivor cannot spend the budget alone, so the
    # restarted child must run trials for the study to finish.
    proc = start_hpo("worker", "pool-kill", "--processes", "2", "--rank", "100",
                     "--n-trials", str(per_child), env=hpo_env(storage=str(journal)), cwd=tmp_path)
    storage = open_storage(resolve_storage(str(journal)))
    victim = None
    deadline = time.monotonic() + 120
    try:
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            kids = children_of(proc.pid)
            try:
                trials = optuna.load_study(study_name="pool-kill", storage=storage).get_trials(deepcopy=False)
            except Exception:  # noqa: BLE001 - a journal being written: look again
                continue
            for trial in trials:
                pid = trial.user_attrs.get("worker", {}).get("pid")
                if trial.state == TrialState.RUNNING and pid in kids:
                    os.kill(pid, signal.SIGKILL)
                    victim = trial.user_attrs["worker"]
                    break
    finally:
        (result,) = wait_all([proc])
    assert victim is not None, "no child was caught mid-trial\n" + describe([result])
    assert result.returncode == 0, describe([result])

    killed_rank = victim["rank"]
    restarted_rank = killed_rank + 2
    other_rank = 201 - killed_rank
    # "auto": the --device each child was given (the default), resolved by the child itself.
    restarted = f"[worker {killed_rank}] auto: killed by SIGKILL; restarting in 1 s as rank {restarted_rank}"
    assert restarted in result.stderr, describe([result])
    report = re.findall(r"^\[worker \d+\] auto: .*$", result.stdout, re.M)
    assert report == sorted([f"[worker {killed_rank}] auto: exit 0 after 1 restart (as rank {restarted_rank})",
                             f"[worker {other_rank}] auto: exit 0"]), describe([result])

    trials = optuna.load_study(study_name="pool-kill", storage=storage).get_trials(deepcopy=False)
    states = collections.Counter(t.state for t in trials)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # The killed trial is swept (failed, retried with its params) by the restarted child on this
    # host; if the others finished the budget first it is still RUNNING and holds its slot.
    orphans = [t for t in trials if t.state == TrialState.RUNNING]
    assert len(orphans) <= 1 and states[TrialState.WAITING] == 0, states
    assert len(finished) + len(orphans) == n_trials, (states, describe([result]))
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(trials)))
    ranks = collections.Counter(t.user_attrs["worker"]["rank"] for t in finished)
    assert ranks[restarted_rank] >= 1, ranks
    assert set(ranks) <= {killed_rank, other_rank, restarted_rank}, ranks
    # The restarted child drew its own params, not its predecessor's again; only the retry of
    # the killed trial (hpo.worker.recovery) repeats its params, on purpose.
    draws = [t.params["train.lr"] for t in trials if "train.lr" in t.params and "retry_of" not in t.user_attrs]
    assert len(draws) == len(set(draws)), sorted(draws)
    # The victim may have been killed before it sampled every parameter (it is caught as soon
    # as its worker attribute is set, right after ask): the retry keeps what it had drawn and
    # samples the rest.
    for retry in (t for t in trials if "retry_of" in t.user_attrs):
        assert retry.params.items() >= trials[retry.user_attrs["retry_of"]].params.items()
