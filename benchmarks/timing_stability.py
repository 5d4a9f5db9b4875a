"""Timing stability: one configuration, trial after trial in one worker, while other workers
start and stop around it. Does its seconds per epoch stay put (issue 14: within ±20 %)?

One in-process worker (``hpo.worker.loop.run_worker``, the real training loop, on the CPU)
runs the same digits CNN for ``--trials`` trials. Before every odd trial ``--workers - 1``
other ``hpo worker`` processes (on a study of their own, training the same CNN) are started
and left to reach their first trial; before every even trial they are killed. Each trial's
``seconds_per_epoch``, ``images_per_second`` and ``cpu_threads`` are read back from the study.

Two settings, the same comings and goings:

- **before**: hpo's rule until issue 14, put back by this benchmark alone (it replaces the
  worker's ``keep_threads``): before every trial, threads = cores ÷ hpo workers live now. The
  other workers take their share when they start.
- **after**: every worker keeps one count for its life. Here each is given
  ``--threads cores ÷ --workers`` (what ``--processes``/``--gpus`` give their children), so
  that the counts add up to the cores whoever is running. (A worker started alone without
  ``--threads`` would keep all the cores, and the later ones would oversubscribe them: it
  warns, see docs/workers.md.)

The table gives per trial: the other workers running, cpu_threads, s/epoch, images/s; and per
setting the median s/epoch and the largest deviation from it. Measure on an otherwise idle
machine: anything else running competes for the same cores.

    uv run python -m benchmarks.timing_stability               # 8 trials of 5 epochs, 2 workers
    uv run python -m benchmarks.timing_stability --tiny        # a smoke run (the test suite uses it)

The workers' registry (hpo.worker.threads) is a private temporary directory, so hpo workers of
other runs on the machine are not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import machine, write_table

SPEC = """\
name: {name}
budget: {{n_trials: {n_trials}}}
sampler: {{name: random, seed: 0}}
pruner: {{name: none}}
data: {{name: digits, val_fraction: 0.2, test_fraction: 0.2, split_seed: 0}}
model: {{name: cnn, n_blocks: 2, filters: 128, kernel_size: 3}}
train: {{epochs: {epochs}, batch_size: 64, optimizer: adam, lr: 1.0e-3, seed: 0}}
search: {{}}
"""
#: What ``hpo worker`` runs as (the pool's children's entry: nothing from the working directory).
WORKER_ENTRY = "from hpo.cli.main import main; main()"
READY_TIMEOUT = 300.0  # seconds for another worker to reach its first trial (torch, the data)


@dataclass
class TrialTiming:
    number: int
    others: int  # other workers running when it started
    cpu_threads: int
    seconds_per_epoch: float
    images_per_second: float


def create(work: Path, storage: str, name: str, n_trials: int, epochs: int) -> None:
    from hpo.spec import load_spec
    from hpo.storage.urls import resolve_storage
    from hpo.study.studies import create_study

    path = work / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, n_trials=n_trials, epochs=epochs))
    create_study(load_spec(path), resolve_storage(storage), artifacts=str(work / "artifacts"))


class Neighbours:
    """The other workers: started (and waited for until they train) or killed on demand."""

    def __init__(self, storage: str, registry_tmp: Path, count: int, threads: int | None):
        self.count = count
        self.threads = threads
        self.env = {k: v for k, v in os.environ.items() if k != "HPO_THREADS"}
        self.env.update(HPO_STORAGE=storage, TMPDIR=str(registry_tmp))
        self.running: list[subprocess.Popen[str]] = []

    def set(self, on: bool) -> None:
        if on and not self.running:
            self.running = [self._start(rank) for rank in range(1, self.count + 1)]
            for proc in self.running:
                self._wait_until_training(proc)
        elif not on:
            self.stop()

    def _start(self, rank: int) -> subprocess.Popen[str]:
        threads = [] if self.threads is None else ["--threads", str(self.threads)]
        command = [sys.executable, "-P", "-c", WORKER_ENTRY, "worker", "neighbours", "--device", "cpu",
                   "--progress-events", "--rank", str(rank), *threads]
        return subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, bufsize=1)

    @staticmethod
    def _wait_until_training(proc: subprocess.Popen[str]) -> None:
        """Until its first trial starts; the rest of its output is read and dropped (a full
        pipe would stop it, and with it the load it is there to put on the cores)."""
        from hpo.worker.progress import read_event

        deadline = time.monotonic() + READY_TIMEOUT
        stream = proc.stdout
        assert stream is not None
        for line in stream:
            event = read_event(line)
            if event is not None and event[0] == "trial_start":
                threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
                return
            if time.monotonic() > deadline:
                break
        raise SystemExit(f"another worker did not start training (exit {proc.poll()})")

    def stop(self) -> None:
        for proc in self.running:
            proc.kill()
            proc.wait()
        self.running = []


def measure(work: Path, storage: str, setting: str, *, trials: int, epochs: int, workers: int) -> list[TrialTiming]:
    """One setting: the measured worker's trials, with the others coming and going."""
    import hpo.worker.loop
    from hpo.storage.urls import resolve_storage
    from hpo.worker import threads

    name = f"measured-{setting}"
    create(work, storage, name, trials, epochs)
    per_worker = threads.share_of_cores(workers)
    neighbours = Neighbours(storage, Path(tempfile.gettempdir()), workers - 1,
                            None if setting == "before" else per_worker)
    others: list[int] = []

    def schedule(event: str, data: dict[str, Any]) -> None:
        if event == "trial_end" and len(others) < trials:
            arrange(len(others))

    def arrange(trial: int) -> None:
        neighbours.set(on=trial % 2 == 1)
        others.append(len(neighbours.running))

    keep = hpo.worker.loop.keep_threads
    if setting == "before":
        hpo.worker.loop.keep_threads = reshare_before_each_trial
    try:
        arrange(0)
        report = hpo.worker.loop.run_worker(name, resolve_storage(storage), device="cpu", rank=0,
                                            progress=schedule, threads=None if setting == "before" else per_worker)
    finally:
        hpo.worker.loop.keep_threads = keep
        neighbours.stop()
    if report.exit_code or len(report.outcomes) != trials:
        raise SystemExit(f"the measured worker stopped: {report.stop_reason}")
    return read_timings(storage, name, others)


def reshare_before_each_trial() -> None:
    """hpo's rule until issue 14 (hpo.worker.threads.share_cpu then): the cores ÷ the hpo
    workers live now, set again before every trial."""
    import torch

    from hpo.worker import threads

    torch.set_num_threads(threads.share_of_cores(threads.live_workers()))


def read_timings(storage: str, name: str, others: list[int]) -> list[TrialTiming]:
    import optuna

    from hpo.storage.urls import open_storage, resolve_storage

    study = optuna.load_study(study_name=name, storage=open_storage(resolve_storage(storage)))
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return [TrialTiming(t.number, n, t.user_attrs["cpu_threads"], t.user_attrs["seconds_per_epoch"],
                        t.user_attrs["images_per_second"]) for t, n in zip(trials, others, strict=True)]


def spread(timings: list[TrialTiming]) -> tuple[float, float]:
    """Median s/epoch and the largest deviation from it, as a fraction of it."""
    median = statistics.median(t.seconds_per_epoch for t in timings)
    return median, max(abs(t.seconds_per_epoch / median - 1) for t in timings)


def table(results: dict[str, list[TrialTiming]], *, epochs: int, workers: int, cores: int) -> str:
    lines = [f"Digits CNN (2 blocks × 128 filters, batch 64), {epochs} epochs per trial, on the CPU; "
             f"{workers} worker slots on {cores} cores; {machine()}.", "",
             "| setting | trial | other workers | cpu_threads | s/epoch | images/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for setting, timings in results.items():
        lines += [f"| {setting} | {t.number} | {t.others} | {t.cpu_threads} | {t.seconds_per_epoch:.3f} "
                  f"| {t.images_per_second:.0f} |" for t in timings]
    lines += ["", "| setting | median s/epoch | largest deviation | within ±20 % |", "|---|---:|---:|---|"]
    for setting, timings in results.items():
        median, worst = spread(timings)
        lines.append(f"| {setting} | {median:.3f} | {worst:.0%} | {'yes' if worst <= 0.20 else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="trials of the measured worker per setting")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="worker slots: the measured one and the others")
    parser.add_argument("--settings", default="before,after", help="before, after, or both (comma-separated)")
    parser.add_argument("--tiny", action="store_true", help="4 trials of 2 epochs (a smoke run)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.trials, args.epochs = 4, 2
    if args.workers < 2 or args.trials < 2:
        parser.error("--workers and --trials must be at least 2")
    settings = [s.strip() for s in args.settings.split(",")]
    if not settings or any(s not in ("before", "after") for s in settings):
        parser.error(f"--settings {args.settings}: expected before, after or before,after")
    from hpo.study.studies import quiet_optuna
    from hpo.worker import threads

    quiet_optuna()
    with tempfile.TemporaryDirectory(prefix="hpo-timing-") as tmp:
        work = Path(tmp)
        tempfile.tempdir = str(work)  # the workers' registry: this run's only (the others: TMPDIR)
        storage = str(work / "studies.journal")
        create(work, storage, "neighbours", 100_000, 1_000)
        results = {setting: measure(work, storage, setting, trials=args.trials, epochs=args.epochs,
                                    workers=args.workers)
                   for setting in settings}
        write_table(table(results, epochs=args.epochs, workers=args.workers, cores=threads.available_cores()),
                    args.output)


if __name__ == "__main__":
    main()
