"""Worker start: how soon ``hpo worker`` answers a study with nothing left to run, and how soon
it trains one that has trials, each as a fresh process, the way a user starts it.

- Spent study: a digits CNN study whose 30-trial budget is spent; from starting ``hpo worker
  NAME`` (and ``--processes 2``) to its exit 0, and the process's peak memory. Goal: <= 1.5 s.
  The worker checks the budget with only optuna and the stored spec loaded: no torch, no data.
- First epoch: a fresh study of search_spaces/digits_cnn.yaml; from starting ``hpo worker NAME``
  to its first epoch's progress line (the worker runs with ``--progress-events``, the JSON
  events a pool's parent shows as lines, and the first ``epoch`` one is timed). Beside it, the
  time to that value in the storage (the first intermediate value in the journal, what the
  dashboard sees): epoch values are written at most every second, so with digits' epochs of
  milliseconds it comes about a second into the trial, or at its end. Each repetition starts two workers
  one after the other on a new, empty dataset cache ($HPO_CACHE_DIR, hpo.training.cache):
  cold, the first worker on this data (it loads digits with scikit-learn, splits them and
  writes the cache), then warm, a worker started again on the same spec (it reads the cached
  splits). Goal: <= 5 s with the warm cache. One run first, not counted, warms the rest (the
  files read, the bytecode compiled). The time to the worker's ``Device:`` line (printed once
  the budget is checked and torch imported to look for a GPU, before the data and the
  warm-up) is shown beside it, and so is the worker's CPU time by its first epoch (user +
  system, from /proc: other work on the machine stretches the wall time, much less this).

Both on the embedded journal store, a fresh journal file per run. Median of 5 runs (of each).

    uv run python -m benchmarks.worker_start            # 5 runs of each, about a minute
    uv run python -m benchmarks.worker_start --tiny     # a smoke run (the test suite uses it)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPENT_GOAL_S = 1.5
FIRST_EPOCH_GOAL_S = 5.0
SPENT_TRIALS = 30


def worker_command(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "hpo", "worker", name, "--rank", "0", *args]


def worker_env(journal: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    # Lines reach the pipe as they are printed (the Device: line is timed).
    return {**env, "HPO_STORAGE": str(journal), "HPO_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}


def create(journal: Path, name: str, *, spent: bool) -> None:
    """A digits CNN study in ``journal``; ``spent``: its budget already filled with finished
    trials (added as such: no training)."""
    import optuna

    from hpo.spec import load_spec
    from hpo.storage.urls import resolve_storage
    from hpo.study.studies import create_study

    spec = load_spec(ROOT / "search_spaces" / "digits_cnn.yaml", name=name)
    if spent:
        spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"n_trials": SPENT_TRIALS})})
    study, _ = create_study(spec, resolve_storage(str(journal)), artifacts=str(journal.parent / "artifacts"))
    if spent:
        for i in range(SPENT_TRIALS):
            study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5 + i / 100))


@dataclass
class Run:
    seconds: float
    peak_mb: float
    code: int
    output: str


def run_to_exit(command: list[str], env: dict[str, str]) -> Run:
    """Start ``command``, wait for its exit; its wall time and its own peak RSS (wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = proc.stdout.read().decode() if proc.stdout else ""
    return Run(seconds, usage.ru_maxrss / 1024, proc.returncode, output)


def spent_runs(work: Path, n: int, *extra: str) -> list[Run]:
    journal = work / f"spent{'-'.join(extra)}.journal"
    create(journal, "spent", spent=True)
    env = worker_env(journal, work / "spent-cache")
    runs = [run_to_exit(worker_command("spent", "--quiet", *extra), env) for _ in range(n)]
    for run in runs:
        if run.code != 0 or "budget spent" not in run.output:
            raise SystemExit(f"the worker did not find the budget spent (exit {run.code}):\n{run.output}")
    return runs


@dataclass
class Start:
    device_s: float  # to the Device: line (its progress event)
    epoch_s: float  # to the first epoch's progress line (its event)
    cpu_s: float  # the worker's CPU time (user + system) by then
    stored_s: float  # to the first intermediate value in the journal


def first_epoch(work: Path, run: str, cache: Path) -> Start:
    """How soon one worker on a fresh study, with its dataset cache in ``cache``, reports its
    first epoch."""
    journal = work / f"fresh-{run}.journal"
    create(journal, "fresh", spent=False)
    seen: dict[str, float] = {}
    started = time.perf_counter()
    # --progress-events: the events a pool's parent shows as lines, as JSON, unbuffered; the
    # first "epoch" one is the first epoch's progress line.
    proc = subprocess.Popen(worker_command("fresh", "--progress-events"), env=worker_env(journal, cache),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            text=True)

    def watch_stdout() -> None:
        from hpo.worker.progress import read_event

        assert proc.stdout is not None
        for line in proc.stdout:
            event = read_event(line)
            if event is None:
                continue
            name = {"chosen_device": "device", "epoch": "epoch"}.get(event[0])
            if name and name not in seen:
                seen[name] = time.perf_counter() - started
                if name == "epoch":
                    seen["cpu"] = _cpu_seconds(proc.pid)

    reader = threading.Thread(target=watch_stdout, daemon=True)
    reader.start()
    try:
        stored_at = _first_intermediate_value(journal, proc, started)
        while "epoch" not in seen and proc.poll() is None:  # its line comes before its write
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)  # the rest of its trials are not measured
        proc.wait()
        reader.join(timeout=5)
    nan = float("nan")
    return Start(seen.get("device", nan), seen.get("epoch", nan), seen.get("cpu", nan), stored_at)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux's /proc; NaN elsewhere). Beside
    the wall time because other work on the machine stretches that, much less this."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _first_intermediate_value(journal: Path, proc: subprocess.Popen[str], started: float,
                              limit: float = 300.0) -> float:
    """Seconds from ``started`` until the journal holds a reported epoch: its log line names
    ``intermediate_value``. Only the new bytes are read each time (every 10 ms)."""
    offset = 0
    while time.perf_counter() - started < limit:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited ({proc.returncode}) before its first epoch")
        with journal.open("rb") as f:
            f.seek(offset)
            new = f.read()
        if b'"intermediate_value"' in new:
            return time.perf_counter() - started
        offset += new.rfind(b"\n") + 1  # a line half written is read again whole
        time.sleep(0.01)
    raise SystemExit(f"no epoch reported within {limit:g} s")


def spent_row(label: str, runs: list[Run]) -> str:
    seconds = statistics.median(r.seconds for r in runs)
    peak = max(r.peak_mb for r in runs)
    met = "yes" if seconds <= SPENT_GOAL_S else "no"
    spread = f"{min(r.seconds for r in runs):.2f}-{max(r.seconds for r in runs):.2f}"
    return f"| {label} | {seconds:.2f} | {spread} | {peak:.0f} | {len(runs)} | {met} |"


def epoch_row(label: str, runs: list[Start], goal: bool) -> str:
    device_s = statistics.median(r.device_s for r in runs)
    epoch_s = statistics.median(r.epoch_s for r in runs)
    cpu_s = statistics.median(r.cpu_s for r in runs)
    stored_s = statistics.median(r.stored_s for r in runs)
    met = ("yes" if epoch_s <= FIRST_EPOCH_GOAL_S else "no") if goal else "-"
    spread = f"{min(r.epoch_s for r in runs):.2f}-{max(r.epoch_s for r in runs):.2f}"
    return (f"| {label} | {device_s:.2f} | {epoch_s:.2f} | {spread} | {cpu_s:.2f} | {stored_s:.2f} "
            f"| {len(runs)} | {met} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="2 spent runs, 1 cold and 1 warm first-epoch run, no warm-up run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    from benchmarks.common import machine, write_table
    from hpo.study.studies import quiet_optuna

    quiet_optuna()
    n_spent, n_epoch = (2, 1) if args.tiny else (args.runs, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        single = spent_runs(work, n_spent)
        pool = spent_runs(work, n_spent, "--processes", "2")
        if not args.tiny:
            first_epoch(work, "uncounted", work / "cache-uncounted")  # the files read, bytecode compiled
        cold, warm = [], []
        for i in range(n_epoch):  # cold and warm side by side: the machine's load hits both alike
            cache = work / f"cache-{i}"
            cold.append(first_epoch(work, f"cold-{i}", cache))
            warm.append(first_epoch(work, f"warm-{i}", cache))
    lines = [
        f"Worker start, embedded journal store, a fresh process per run. Machine: {machine()}.",
        "",
        f"A spent study ({SPENT_TRIALS} finished trials): start to exit 0. Goal: <= {SPENT_GOAL_S:g} s.",
        "",
        "| command | median (s) | range (s) | peak memory (MB) | runs | goal met |",
        "|---|---:|---:|---:|---:|---|",
        spent_row("hpo worker NAME", single),
        spent_row("hpo worker NAME --processes 2", pool),
        "",
        f"A fresh digits CNN study: start to the first epoch's progress line. Goal: <= "
        f"{FIRST_EPOCH_GOAL_S:g} s with a warm dataset cache.",
        "",
        "| dataset cache | to the Device: line, median (s) | to the first epoch, median (s) | range (s) "
        "| CPU time to the first epoch, median (s) | to its value in the storage, median (s) | runs "
        "| goal met |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        epoch_row("cold (the first worker on this data)", cold, goal=False),
        epoch_row("warm (a worker started again)", warm, goal=True),
    ]
    write_table("\n".join(lines), args.output)


if __name__ == "__main__":
    main()
